"""Provider configuration routes (admin): see it, reload it without a restart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends

from promptrelay.api.admin import admin_guard
from promptrelay.core.providers import ProviderConfigError
from promptrelay.errors import InvalidRequest

if TYPE_CHECKING:
    from collections.abc import Callable

    from promptrelay.app import Runtime

__all__ = ["build_providers_router"]


def build_providers_router(runtime: Callable[[], Runtime]) -> APIRouter:
    router = APIRouter(
        prefix="/api/providers", dependencies=[Depends(admin_guard(runtime))], tags=["providers"]
    )

    @router.get("", summary="The provider configuration in use")
    async def show() -> dict[str, Any]:
        providers = runtime().providers
        await providers.refresh()
        return providers.snapshot()

    @router.post("/reload", summary="Re-read PROVIDERS_FILE now, in every process")
    async def reload() -> dict[str, Any]:
        providers = runtime().providers
        try:
            await providers.reload()
        except ProviderConfigError as error:
            raise InvalidRequest(f"{error} (the previous configuration stays in use)") from None
        return {"reloaded": providers.path is not None, **providers.snapshot()}

    return router
