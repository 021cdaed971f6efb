"""The hot routes' request and answer shapes, for the OpenAPI schema only.

POST /v1/messages and POST /api/generate are served by plain ASGI (`hot.py`) before the
management app sees a request, so FastAPI never routes them. These models and the router
below exist so /docs and /openapi.json describe them too and clients can be generated
from the schema. The router's handlers answer only while the gateway has not started
(every request reaches `hot.py` after that).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field

from promptrelay.errors import UpstreamUnavailable

__all__ = ["build_hot_schema_router"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextBlock(_Open):
    type: Literal["text"] = "text"
    text: str


class InputMessage(_Open):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]] = Field(
        description="A string, or content blocks as the Messages API defines them."
    )


class MessagesRequest(_Open):
    """Anthropic's Messages API body; fields not listed here are passed on unchanged."""

    model: str = Field(description="A model id or an alias from PROVIDERS_FILE.")
    max_tokens: Annotated[int, Field(ge=1)]
    messages: list[InputMessage]
    system: str | list[dict[str, Any]] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    stream: bool = Field(False, description="true: the answer is an SSE stream.")
    metadata: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None


class Usage(_Open):
    input_tokens: int
    output_tokens: int


class Message(_Open):
    """Anthropic's Message object (`X-Cache: HIT | MISS | BYPASS` says where it came from)."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[TextBlock | dict[str, Any]]
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorEnvelope(BaseModel):
    """Every error: Anthropic's envelope."""

    type: Literal["error"] = "error"
    error: ErrorDetail


class GenerateRequest(BaseModel):
    """Exactly one of prompt, messages or template."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = None
    messages: list[InputMessage] | None = None
    template: str | None = Field(None, description="A stored template's name.")
    version: Annotated[int, Field(ge=1)] | None = Field(None, description="Template version.")
    variables: dict[str, Any] | None = Field(None, description="The template's variables.")
    system: str | None = None
    model: str | None = Field(None, description="Default: DEFAULT_MODEL (or the template's).")
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: float | None = None
    cache: bool = Field(True, description="false: neither look up nor store.")
    metadata: dict[str, Any] | None = None


class GenerateAnswer(BaseModel):
    id: str | None
    text: str
    model: str | None
    usage: Usage | None
    stop_reason: str | None
    cached: bool
    offline: bool = Field(description="true: the built-in offline provider answered.")
    latency_ms: float
    template: str | None = None
    template_version: int | None = None


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": text}
    for status, text in (
        (400, "Bad input"),
        (401, "Missing or wrong client key"),
        (413, "Body larger than MAX_BODY_BYTES"),
        (429, "Rate limited (quota or upstream)"),
        (503, "Upstream unavailable or the breaker is open (Retry-After)"),
    )
}


def build_hot_schema_router() -> APIRouter:
    router = APIRouter(tags=["messages"])

    @router.post(
        "/v1/messages",
        summary="Anthropic Messages API (JSON, or SSE with stream: true), through the cache",
        response_model=Message,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "Message or SSE"},
            **_ERRORS,
        },
    )
    async def messages(body: Annotated[MessagesRequest, Body()]) -> Message:
        raise UpstreamUnavailable("promptrelay is starting")

    @router.post(
        "/api/generate",
        summary="Simple JSON for n8n: a prompt, messages or a template, answered flat",
        response_model=GenerateAnswer,
        responses=_ERRORS,
    )
    async def generate(body: Annotated[GenerateRequest, Body()]) -> GenerateAnswer:
        raise UpstreamUnavailable("promptrelay is starting")

    return router
