"""KEYS_FILE routes (admin): GET /api/keys lists names, limits and usage, never keys;
POST /api/keys/reload reads the file again (a bad file: 400, the old keys stay)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from promptrelay.api.access import Access
from promptrelay.core.auth import KeyResolver
from promptrelay.core.keyfile import KeysFileError
from promptrelay.core.quotas import Quotas
from promptrelay.errors import InvalidRequest, NotFound

__all__ = ["build_keys_router"]


def build_keys_router(access: Access, keys: KeyResolver, quotas: Quotas | None) -> APIRouter:
    router = APIRouter(tags=["keys"], dependencies=[Depends(access.admin)])

    @router.get("/api/keys", summary="KEYS_FILE keys: names, limits and usage (never keys)")
    async def list_keys() -> dict[str, Any]:
        if quotas is None:
            raise NotFound("no KEYS_FILE is configured")
        return {
            "keys": [
                {
                    "name": entry.name,
                    "models": sorted(entry.models) if entry.models is not None else None,
                    "usage": await quotas.usage(entry),
                }
                for entry in keys.entries
            ]
        }

    @router.post("/api/keys/reload", summary="Read KEYS_FILE again")
    async def reload() -> dict[str, Any]:
        if quotas is None:
            raise NotFound("no KEYS_FILE is configured")
        try:
            count = keys.reload()
        except KeysFileError as error:
            raise InvalidRequest(f"{error}; the keys loaded before stay in use") from None
        return {"reloaded": True, "keys": count}

    return router
