"""One error tree for the whole service.

    GatewayError                 every error we raise on purpose; carries HTTP status + type
    ├── InvalidRequest           400 invalid_request_error (bad JSON, missing/mistyped field)
    ├── Unauthorized             401 authentication_error
    ├── Forbidden                403 permission_error
    ├── NotFound                 404 not_found_error
    ├── PayloadTooLarge          413 request_too_large
    ├── RateLimited              429 rate_limit_error, with retry_after (governor, quotas)
    ├── HeadersTooLarge          431 request_too_large (request line + headers over the cap)
    ├── RequestTimeout           408 timeout_error (the client's head or body stopped arriving)
    ├── TooManyConnections       503 overloaded_error, with retry_after (connection cap)
    ├── UpstreamError            an upstream call failed before an answer arrived
    │   ├── UpstreamTimeout      504 timeout_error
    │   ├── UpstreamUnavailable  502 api_error (connection refused/reset)
    │   └── CircuitOpen          503 overloaded_error, with retry_after
    └── OfflineUnsupported       501 api_error: the offline provider cannot answer this route

    RedisUnavailable             never an HTTP answer: the Redis tier is down, or one call
                                 through it failed or ran out of time; the caller uses its
                                 local fallback (the breaker decides locally, an alert is
                                 delivered by this process, ...)

Foreign errors (aiohttp, redis) are translated at the boundary that meets them; the
HTTP layer maps a GatewayError to Anthropic's error shape exactly once.
"""

from __future__ import annotations

import orjson

__all__ = [
    "CircuitOpen",
    "Forbidden",
    "GatewayError",
    "HeadersTooLarge",
    "InvalidRequest",
    "NotFound",
    "OfflineUnsupported",
    "PayloadTooLarge",
    "RateLimited",
    "RedisUnavailable",
    "RequestTimeout",
    "TooManyConnections",
    "Unauthorized",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "error_body",
]


class GatewayError(Exception):
    status = 500
    type = "api_error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def body(self) -> bytes:
        return error_body(self.type, self.message)


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"


class HeadersTooLarge(GatewayError):
    status = 431
    type = "request_too_large"


class RequestTimeout(GatewayError):
    status = 408
    type = "timeout_error"


class TooManyConnections(GatewayError):
    status = 503
    type = "overloaded_error"


class UpstreamError(GatewayError):
    status = 502
    type = "api_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"


class UpstreamUnavailable(UpstreamError):
    status = 502
    type = "api_error"


class CircuitOpen(UpstreamError):
    status = 503
    type = "overloaded_error"


class OfflineUnsupported(GatewayError):
    status = 501
    type = "api_error"


class RedisUnavailable(Exception):
    """Raised by the Redis tier's ``run`` instead of any redis-py error; see the tree."""


def error_body(type_: str, message: str) -> bytes:
    """Anthropic's error envelope: {"type": "error", "error": {"type", "message"}}."""
    return orjson.dumps({"type": "error", "error": {"type": type_, "message": message}})
