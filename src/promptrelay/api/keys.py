"""KEYS_FILE routes (admin): GET /api/keys lists names, limits and usage, never keys;
POST /api/keys/reload reads the file again (a bad file: 400, the old keys stay)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends

from promptrelay.api.admin import admin_guard
from promptrelay.core.keyfile import KeysFileError
from promptrelay.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from collections.abc import Callable

    from promptrelay.app import Runtime

__all__ = ["build_keys_router"]


def build_keys_router(runtime: Callable[[], Runtime]) -> APIRouter:
    router = APIRouter(tags=["keys"], dependencies=[Depends(admin_guard(runtime))])

    @router.get("/api/keys", summary="KEYS_FILE keys: names, limits and usage (never keys)")
    async def keys() -> dict[str, Any]:
        rt = runtime()
        if rt.quotas is None:
            raise NotFound("no KEYS_FILE is configured")
        return {
            "keys": [
                {
                    "name": entry.name,
                    "models": sorted(entry.models) if entry.models is not None else None,
                    "usage": await rt.quotas.usage(entry),
                }
                for entry in rt.keys.entries
            ]
        }

    @router.post("/api/keys/reload", summary="Read KEYS_FILE again")
    async def reload() -> dict[str, Any]:
        rt = runtime()
        if rt.quotas is None:
            raise NotFound("no KEYS_FILE is configured")
        try:
            count = rt.keys.reload()
        except KeysFileError as error:
            raise InvalidRequest(f"{error}; the keys loaded before stay in use") from None
        return {"reloaded": True, "keys": count}

    return router
