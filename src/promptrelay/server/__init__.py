"""The HTTP server layer: uvicorn + uvloop + httptools, with promptrelay's connection limits."""

from promptrelay.server.limits import ServerLimits
from promptrelay.server.options import uvicorn_options
from promptrelay.server.protocol import GatewayProtocol

__all__ = ["GatewayProtocol", "ServerLimits", "uvicorn_options"]
