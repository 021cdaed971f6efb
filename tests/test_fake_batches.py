"""The fake upstream's Message Batches, read by the official anthropic SDK over HTTP.

The SDK parses every answer into its typed models, so a wrong shape fails here.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

import anthropic
import orjson
import pytest


def _params(text: str) -> dict[str, Any]:
    return {
        "model": "claude-3-haiku-20240307",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": text}],
    }


def _get(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"x-api-key": "k"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def test_create_retrieve_and_results_through_the_sdk(fake_upstream):
    fake_upstream.configure(batch_processing_ms=200)
    client = anthropic.Anthropic(api_key="sk-test", base_url=fake_upstream.url, max_retries=0)
    requests: Any = [  # plain dicts: the SDK's TypedDicts are for callers, not for this test
        {"custom_id": "a-1", "params": _params("first")},
        {"custom_id": "b_2", "params": {"model": "m", "max_tokens": 0, "messages": []}},
    ]
    created = client.messages.batches.create(requests=requests)
    assert created.type == "message_batch" and created.processing_status == "in_progress"
    assert created.request_counts.processing == 2 and created.results_url is None
    deadline = time.monotonic() + 5
    batch = client.messages.batches.retrieve(created.id)
    while batch.processing_status != "ended" and time.monotonic() < deadline:
        time.sleep(0.05)
        batch = client.messages.batches.retrieve(created.id)
    assert batch.processing_status == "ended" and batch.ended_at is not None
    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (1, 1)
    assert batch.results_url == f"{fake_upstream.url}/v1/messages/batches/{created.id}/results"
    results = {r.custom_id: r.result for r in client.messages.batches.results(created.id)}
    single = client.messages.create(**_params("first"))
    first, second = results["a-1"], results["b_2"]
    assert first.type == "succeeded" and first.message.content == single.content
    assert second.type == "errored" and second.error.error.type == "invalid_request_error"
    client.close()


def test_results_are_404_until_ended(fake_upstream):
    fake_upstream.configure(batch_processing_ms=10_000)
    with anthropic.Anthropic(api_key="k", base_url=fake_upstream.url, max_retries=0) as client:
        requests: Any = [{"custom_id": "x", "params": _params("wait")}]
        created = client.messages.batches.create(requests=requests)
    status, _ = _get(f"{fake_upstream.url}/v1/messages/batches/{created.id}/results")
    assert status == 404
    assert _get(f"{fake_upstream.url}/v1/messages/batches/msgbatch_unknown")[0] == 404
    assert _get(f"{fake_upstream.url}/v1/messages/batches/{created.id}")[0] == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"requests": []}, "requests: field required"),
        ({"requests": [{"custom_id": "bad id!", "params": {}}]}, "custom_id"),
        (
            {"requests": [{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}]},
            "duplicate",
        ),
        ({"requests": [{"custom_id": "a", "params": {**_params("s"), "stream": True}}]}, "stream"),
    ],
)
def test_bad_batches_are_400(fake_upstream, body, message):
    request = urllib.request.Request(
        f"{fake_upstream.url}/v1/messages/batches",
        data=orjson.dumps(body),
        headers={"x-api-key": "k", "content-type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    with caught.value as error:
        assert error.code == 400
        assert message in orjson.loads(error.read())["error"]["message"]


def test_processing_delay_is_a_control_route_knob(fake_upstream):
    request = urllib.request.Request(
        f"{fake_upstream.url}/_fake/config",
        data=b'{"batch_processing_ms": 1500}',
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert orjson.loads(response.read())["batch_processing_ms"] == 1500.0
    bad = urllib.request.Request(
        f"{fake_upstream.url}/_fake/config", data=b'{"batch_processing_ms": -1}', method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(bad, timeout=5)
    with caught.value as error:
        assert error.code == 400
