"""The fake Anthropic API: a real HTTP server on loopback for tests and benchmarks.

It speaks the Messages API wire format (JSON, SSE streaming, error envelopes and
headers) and has knobs for latency and faults (`FakeConfig`). Answers are deterministic:
"Echo: <last user text> [<hash of the body>]".

Routes:

    POST /v1/messages               JSON or SSE (`"stream": true`); needs `x-api-key`
    POST /v1/messages/count_tokens  {"input_tokens": n}
    GET  /v1/models, /v1/models/{id}
    POST /v1/messages/batches       Message Batches (fake_batches.py): create, then
    GET  /v1/messages/batches/{id}[/results]   status, results as JSONL once ended
    GET  /_fake/stats               counters and the raw log of every request received,
                                    see `FakeUpstream.stats`
    POST /_fake/reset               zero the counters
    GET|POST /_fake/config          read / change knobs (JSON object of FakeConfig fields)

`FakeUpstream(prefix="/anthropic")` (or `FakeUpstreamThread(prefix=...)`) serves all of
them under that path only, as an API behind a path-prefixed proxy; `url` includes it.

Use in tests (the `fake_upstream` pytest fixture in tests/fixtures_upstream.py wraps it):

    with FakeUpstreamThread(FakeConfig(stream_chunks=3)) as fake:
        settings = Settings(anthropic_base_url=fake.url, ...)
        fake.configure(fail_next=1, fail_next_status=529, retry_after=0)

or inside a running loop: `fake = FakeUpstream(); port = await fake.start(); ...;
await fake.stop()`. From a shell: `promptrelay fake-upstream --port 9000`.
"""

from __future__ import annotations

from promptrelay.devtools.fake_config import FakeConfig
from promptrelay.devtools.fake_runner import FakeUpstreamThread, run_fake_upstream
from promptrelay.devtools.fake_server import FakeUpstream

__all__ = ["FakeConfig", "FakeUpstream", "FakeUpstreamThread", "run_fake_upstream"]
