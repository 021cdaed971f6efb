"""The uvicorn options of a promptrelay server, from Settings, in one place.

`promptrelay serve` (one process or several workers) and the tests' RunningGateway both
pass these to uvicorn, so tests run the server layer production runs.
"""

from __future__ import annotations

import functools
from typing import Any

from promptrelay.server.limits import ServerLimits
from promptrelay.server.protocol import GatewayProtocol
from promptrelay.settings import Settings

__all__ = ["uvicorn_options"]


def uvicorn_options(settings: Settings, *, access_log: bool = False) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` or `uvicorn.Config`, the app aside.

    The protocol is a partial of an importable class over a frozen dataclass, so it
    pickles into the worker processes uvicorn spawns for WORKERS > 1.
    """
    limits = ServerLimits.from_settings(settings)
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": functools.partial(GatewayProtocol, limits=limits),
        # No route speaks WebSocket; an upgrade would hand the connection to a protocol
        # without these limits.
        "ws": "none",
        "lifespan": "on",
        "access_log": access_log,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": int(settings.shutdown_grace),
        "server_header": False,
    }
