"""The /v1/* pass-through never leaves the upstream's /v1/, however the path is spelled.

Requests go out as raw request lines over a plain socket: HTTP clients normalise paths
(aiohttp and httpx resolve `..`, some re-encode), which would hide what a hostile client
can send. The fake upstream's request log (every request it received, raw) proves what
reached it, with a plain base URL and with one that has a path prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from promptrelay.devtools.fake import FakeUpstreamThread
from promptrelay.settings import Settings
from tests.fixtures_gateway import RunningGateway
from tests.rawhttp import raw_request

GATEWAY_KEY = "sk-gateway-own"


@dataclass
class Setup:
    fake: FakeUpstreamThread
    port: int
    prefix: str

    def log(self) -> list[dict[str, str]]:
        return list(self.fake.stats()["request_log"])


@pytest.fixture(scope="module", params=["", "/anthropic"], ids=["plain-base", "prefixed-base"])
def served(request: Any) -> Iterator[Setup]:
    """One fake and one gateway per base URL for the whole module (each test resets the
    fake's log): starting them per case would cost most of the module's time."""
    prefix: str = request.param
    with FakeUpstreamThread(prefix=prefix) as fake:
        settings = Settings(anthropic_api_key=SecretStr(GATEWAY_KEY), anthropic_base_url=fake.url)
        gateway = RunningGateway(settings)
        try:
            yield Setup(fake, gateway.port, prefix)
        finally:
            gateway.stop()


@pytest.fixture
def setup(served: Setup) -> Setup:
    served.fake.reset()
    return served


# Each reaches promptrelay (the server's parser accepts the request line) and is refused
# there, in the Anthropic error shape.
REFUSED_BY_THE_GATEWAY = [
    b"/v1/%2e%2e/_fake/stats",
    b"/v1/%2E%2E/%2e%2E/_fake/stats",
    b"/v1/.%2e/_fake/stats",
    b"/v1/../_fake/stats",
    b"/v1/../x",
    b"/v1/models/../../_fake/stats",
    b"/v1/models/..%2F..%2F_fake%2Fstats",
    b"/v1/models/..%2f..%2fx",
    b"/v1/./models",
    b"/v1/models/.",
    b"/v1/..;/_fake/stats",
    b"/v1/models/..;x=1/..;/_fake/stats",
    b"/v1/%2e%2e;/_fake/stats",
    b"/v1//models",
    b"/v1/models//x",
    b"/v1/",
    b"/v1/models%5c..%5c..%5c_fake%5cstats",
    b"/v1/models/..\\..\\_fake",
    b"/v1/%252e%252e/_fake/stats",
    b"/v1/models%252f..%252f..%252f_fake",
    b"/v1/%25%32%65%25%32%65/_fake/stats",
    b"/v1/models/x%00y",
    b"/v1/models/x%0d%0aHost:%20evil",
    b"/v1/models/x%7f",
    b"/v1/models/%",
    b"/v1/models/%2",
    b"/v1/models/%zz",
    b"/v1/models/%ff",
    b"/v1/models/%c3",
]

# The server's own parser refuses these before promptrelay sees them (or cuts the
# connection); all that matters here is that nothing reaches the upstream.
REFUSED_BY_THE_SERVER = [
    b"/v1/models/x\x00y",
    b"/v1/models/x\ty",
    b"/v1/models/x\x7fy",
    b"/v1/models/x\x1by",
    b"/v1/models/\xc3\xa9",
]


@pytest.mark.parametrize("target", REFUSED_BY_THE_GATEWAY, ids=repr)
def test_hostile_path_is_refused_in_the_error_shape_and_never_sent(setup, target):
    answer = raw_request(setup.port, target)
    assert answer.status == 400, answer
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(("path:", "query:"))
    assert setup.log() == []


@pytest.mark.parametrize(
    "target",
    [b"//v1/models", b"/x/../v1/models", b"/_fake/stats", b"/v1", b"/V1/models", b"/v2/models"],
    ids=repr,
)
def test_paths_outside_v1_are_not_found_and_never_sent(setup, target):
    answer = raw_request(setup.port, target)
    assert answer.status == 404, answer
    assert answer.json()["error"]["type"] == "not_found_error"
    assert setup.log() == []


@pytest.mark.parametrize("target", REFUSED_BY_THE_SERVER, ids=repr)
def test_control_characters_in_the_request_line_never_reach_the_upstream(setup, target):
    answer = raw_request(setup.port, target)
    assert answer.status == 0 or 400 <= answer.status < 500, answer
    assert setup.log() == []


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        (b"/v1/models", "/v1/models"),
        (b"/v1/models?limit=2", "/v1/models?limit=2"),
        (b"/v1/models?limit=2&after_id=claude-3-haiku-20240307", None),
        (b"/v1/models/claude-3-haiku-20240307", None),
        (b"/v1/messages/batches/msgbatch_123", None),
        (b"/v1/messages/batches/msgbatch_123?beta=true", None),
        (b"/v1/%6Dodels", "/v1/models"),  # decoded once, sent in one canonical spelling
        (b"/v1/models/claude%3Ax", "/v1/models/claude:x"),
        (b"/v1/files/file%20a", "/v1/files/file%20a"),
    ],
    ids=repr,
)
def test_valid_paths_pass_through_to_exactly_that_path(setup, target, forwarded):
    answer = raw_request(setup.port, target)
    expected = setup.prefix + (forwarded or target.decode())
    assert setup.log() == [{"method": "GET", "path": expected}]
    # The fake's own answer came back: 200 for what it knows, its 404 envelope otherwise.
    assert answer.status in (200, 404)
    assert answer.headers.get("request-id", "").startswith("req_fake")
    stats = setup.fake.stats()
    assert stats["api_keys_seen"] == [GATEWAY_KEY]
    assert stats["outside_prefix"] == 0


def test_a_known_model_is_answered_through_the_pass_through(setup):
    answer = raw_request(setup.port, b"/v1/models/claude-3-haiku-20240307")
    assert answer.status == 200
    assert answer.json()["id"] == "claude-3-haiku-20240307"


# -- generated paths --------------------------------------------------------------------

_HOSTILE = [
    "..",
    ".",
    "%2e%2e",
    "%2E%2e",
    ".%2e",
    "%2e",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "\\",
    "%252f",
    "%252e%252e",
    "%25",
    "%00",
    "%0a",
    "%0d",
    "%1f",
    "%7f",
    "%",
    "%g0",
    "..;",
    "..;x=1",
    ".;",
    "%2e%2e;",
]
_BENIGN = ["models", "claude-x", "_fake", "stats", "x", "..a", "a..", "...", ";", "..;", "~", "%41"]
_PIECE = st.sampled_from(_HOSTILE + _BENIGN)
_SEGMENT = st.lists(_PIECE, min_size=0, max_size=3).map("".join)
_SLASH = st.sampled_from(["/", "/", "/", "//"])


@st.composite
def _paths(draw: Any, hostile: bool) -> str:
    segments = draw(st.lists(_SEGMENT, min_size=1, max_size=5))
    if hostile:
        where = draw(st.integers(0, len(segments) - 1))
        segments[where] = draw(st.sampled_from(_HOSTILE))
    path = "/v1/" + "".join(segment + draw(_SLASH) for segment in segments)
    return path[:-1] if draw(st.booleans()) else path  # with or without a trailing slash


def _strictly_under_v1(logged: str, prefix: str) -> bool:
    """Independent of the gateway's rule: the path the fake received, decoded, has nothing
    for anyone to resolve and no way to be read as another path."""
    path = logged.partition("?")[0]
    if not path.startswith(prefix + "/v1/"):
        return False
    if any(code in path.lower() for code in ("%2f", "%5c", "%25", "%00", "\\")):
        return False
    segments = unquote(path[len(prefix) :]).split("/")[2:]
    if segments and segments[-1] == "":
        segments.pop()
    # A segment is also read without its ';' parameters (Tomcat, Jetty): '..;x' is '..'.
    return bool(segments) and all(s.partition(";")[0] not in ("", ".", "..") for s in segments)


_EXAMPLES = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@_EXAMPLES
@given(path=_paths(hostile=True))
def test_generated_hostile_paths_are_refused_and_never_sent(setup, path):
    setup.fake.reset()
    answer = raw_request(setup.port, path.encode())
    assert 400 <= answer.status < 500, (path, answer)
    assert setup.log() == [], path


@_EXAMPLES
@given(path=_paths(hostile=False))
def test_generated_paths_are_refused_or_sent_strictly_under_v1(setup, path):
    setup.fake.reset()
    answer = raw_request(setup.port, path.encode())
    log = setup.log()
    if not log:
        assert 400 <= answer.status < 500, (path, answer)
        return
    assert len(log) == 1, (path, log)
    assert _strictly_under_v1(log[0]["path"], setup.prefix), (path, log)
    assert setup.fake.stats()["outside_prefix"] == 0
