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
        "https://api.anthropic.com/v1/../admin",
        "https://api.anthropic.com/v1/%2e%2e/admin",
        "https://api.anthropic.com/v1/messages/batches/x%2f..%2f..%2fadmin",
        "https://api.anthropic.com/v1//admin",
        "https://api.anthropic.com/v1/messages/batches/x/results#frag",
        None,
        42,
    ],
)
def test_results_url_elsewhere_is_refused(url):
    with pytest.raises(UpstreamUnavailable):
        results_path(BASE, url)


def test_results_url_under_a_prefixed_base_keeps_its_query():
    base = "http://proxy:8080/anthropic"
    url = f"{base}/v1/messages/batches/msgbatch_1/results?page=2"
    assert results_path(base, url) == "/v1/messages/batches/msgbatch_1/results?page=2"
    with pytest.raises(UpstreamUnavailable):
        results_path(base, "http://proxy:8080/anthropic/v1/../../other/v1/x")
    with pytest.raises(UpstreamUnavailable):
        results_path(base, "http://proxy:8080/v1/messages/batches/msgbatch_1/results")
