"""`GET /v1/models` as one answer both SDKs read: pure.

Anthropic's page (`data[]` of `{type, id, display_name, created_at}`, `has_more`,
`first_id`, `last_id`) gains OpenAI's fields: `object: "list"` on the page and
`object: "model"`, `created` (Unix seconds) and `owned_by` on every item. The providers
file's aliases follow the models on the first page, each shown with the model it names,
so a model picker (n8n's) offers them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = ["model_item", "models_list"]


def _created(value: Any) -> int:
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return 0
    return 0


def _openai_item(item: dict[str, Any], owner: str) -> dict[str, Any]:
    return {
        **item,
        "object": "model",
        "created": _created(item.get("created_at")),
        "owned_by": owner,
    }


def model_item(item: dict[str, Any]) -> dict[str, Any]:
    """`GET /v1/models/{id}`: one model with OpenAI's fields too."""
    return _openai_item(item, "anthropic")


def models_list(page: dict[str, Any], aliases: Mapping[str, str]) -> dict[str, Any]:
    items = [item for item in page.get("data") or [] if isinstance(item, dict)]
    data = [_openai_item(item, "anthropic") for item in items]
    known = {item.get("id"): item for item in items}
    for alias, target in aliases.items():
        if alias in known:
            continue
        named = known.get(target, {})
        alias_item = {
            "type": "model",
            "id": alias,
            "display_name": f"{alias} ({target})",
            "created_at": named.get("created_at", "1970-01-01T00:00:00Z"),
        }
        data.append(_openai_item(alias_item, "promptrelay"))
    return {
        **page,
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": page.get("last_id", data[-1]["id"] if data else None),
    }
