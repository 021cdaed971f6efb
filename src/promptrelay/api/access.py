"""Who may call the management routes: the admin rule and the reader rule.

Admin rule: with ADMIN_API_KEY set, `Authorization: Bearer <key>` (or x-api-key) is
required, compared in constant time: 401 without a key or with a wrong one, 403 with a
client key (it is valid, just not for this). Without ADMIN_API_KEY, only loopback
clients are answered (403 otherwise).

Reader rule (template reads): open unless PROMPTRELAY_API_KEYS is set; then a client key,
or whatever passes the admin rule.

    access = Access(settings.admin_api_key, keys)
    router = APIRouter(dependencies=[Depends(access.admin)])
"""

from __future__ import annotations

import hmac

from fastapi import Request
from pydantic import SecretStr

from promptrelay.api.asgi import request_headers
from promptrelay.core.auth import KeyResolver, client_key
from promptrelay.errors import Forbidden, Unauthorized
from promptrelay.settings import is_loopback_host

__all__ = ["Access"]


class Access:
    def __init__(self, admin_key: SecretStr | None, keys: KeyResolver) -> None:
        self._admin = admin_key.get_secret_value().encode() if admin_key else None
        self._keys = keys

    def admin(self, request: Request) -> None:
        """The dependency of every admin route (see the module docstring)."""
        if self._admin is None:
            host = request.client.host if request.client else ""
            if not is_loopback_host(host):
                raise Forbidden("admin routes answer loopback clients only unless ADMIN_API_KEY")
            return
        presented = client_key(request_headers(request.scope))
        if presented is None:
            raise Unauthorized("admin route: send Authorization: Bearer <ADMIN_API_KEY>")
        if hmac.compare_digest(presented.encode(), self._admin):
            return
        if self._keys.check_client_key(presented):
            raise Forbidden("a client key cannot use admin routes")
        raise Unauthorized("invalid admin key")

    def reader(self, request: Request) -> None:
        """The dependency of template reads (see the module docstring)."""
        if not self._keys.requires_client_key:
            return
        presented = client_key(request_headers(request.scope))
        if presented is not None and self._keys.check_client_key(presented):
            return
        self.admin(request)
