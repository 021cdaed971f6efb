"""Provider configuration routes (admin): see it, reload it without a restart."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from promptrelay.api.access import Access
from promptrelay.core.providers import ProviderConfigError, Providers
from promptrelay.errors import InvalidRequest

__all__ = ["build_providers_router"]


def build_providers_router(access: Access, providers: Providers) -> APIRouter:
    router = APIRouter(
        prefix="/api/providers", dependencies=[Depends(access.admin)], tags=["providers"]
    )

    @router.get("", summary="The provider configuration in use")
    async def show() -> dict[str, Any]:
        await providers.refresh()
        return providers.snapshot()

    @router.post("/reload", summary="Re-read PROVIDERS_FILE now, in every process")
    async def reload() -> dict[str, Any]:
        try:
            await providers.reload()
        except ProviderConfigError as error:
            raise InvalidRequest(f"{error} (the previous configuration stays in use)") from None
        return {"reloaded": providers.path is not None, **providers.snapshot()}

    return router
