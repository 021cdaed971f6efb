"""Who may call the management routes: the admin rule and the reader rule.

Admin rule: with ADMIN_API_KEY set, `Authorization: Bearer <key>` (or x-api-key) is
required, compared in constant time: 401 without a key or with a wrong one, 403 with a
client key (it is valid, just not for this). Without ADMIN_API_KEY, only loopback
clients are answered (403 otherwise). On top of either, `sameorigin.py`'s checks refuse
(403) what looks like another site driving the gateway through a browser.

Reader rule (template reads): open unless PROMPTRELAY_API_KEYS is set; then a client key,
or whatever passes the admin rule.

    access = Access(settings, keys)
    router = APIRouter(dependencies=[Depends(access.admin)])
"""

from __future__ import annotations

import hmac

from fastapi import Request

from promptrelay.api.asgi import request_headers
from promptrelay.api.sameorigin import cross_site_refusal
from promptrelay.core.auth import KeyResolver, client_key
from promptrelay.errors import Forbidden, Unauthorized
from promptrelay.settings import Settings, is_loopback_host

__all__ = ["Access"]


class Access:
    def __init__(self, settings: Settings, keys: KeyResolver) -> None:
        admin_key = settings.admin_api_key
        self._admin = admin_key.get_secret_value().encode() if admin_key else None
        self._allowed_hosts = [*settings.admin_hosts, settings.host]
        self._keys = keys

    def admin(self, request: Request) -> None:
        """The dependency of every admin route (see the module docstring)."""
        refusal = cross_site_refusal(
            {name.lower(): value for name, value in request.headers.items()},
            method=request.method,
            keyed=self._admin is not None,
            allowed_hosts=self._allowed_hosts,
        )
        if refusal is not None:
            raise Forbidden(refusal)
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
