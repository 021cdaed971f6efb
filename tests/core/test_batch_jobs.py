"""Pure parts of the async batch jobs: where results may be fetched from."""

from __future__ import annotations

import pytest

from promptrelay.core.batch_jobs import results_path
from promptrelay.errors import UpstreamUnavailable

BASE = "https://api.anthropic.com"


def test_results_url_on_the_upstream_becomes_a_path():
    url = f"{BASE}/v1/messages/batches/msgbatch_1/results"
    assert results_path(BASE, url) == "/v1/messages/batches/msgbatch_1/results"
    assert results_path(BASE + "/", url) == "/v1/messages/batches/msgbatch_1/results"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/v1/messages/batches/x/results",
        "https://api.anthropic.com.evil.example/v1/messages/batches/x/results",
        "http://api.anthropic.com/v1/messages/batches/x/results",
        "https://api.anthropic.com:8443/v1/messages/batches/x/results",
        "https://api.anthropic.com/other",
        None,
        42,
    ],
)
def test_results_url_elsewhere_is_refused(url):
    with pytest.raises(UpstreamUnavailable):
        results_path(BASE, url)
