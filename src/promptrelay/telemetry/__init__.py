"""The service watching itself: listeners on the event bus and a sampler.

Modules:
    stats.py       RequestStats: the one per-event listener (append-only on the hot path)
    histogram.py   bounded-memory log-bucket histograms (percentiles within ~5%)
    system.py      the sampler's probes: RSS, heap, CPU, loop lag, fds, GC, memory limit
    snapshot.py    Snapshot and Tuning: the plain numbers rules and advice read
    alerts.py      alert rules (pure) and the alert state machine (escalation, cooldown)
    recommend.py   recommendations (pure)
    guard.py       the memory guard: policy (pure) and its actions
    history.py     ring buffers served as time series
    prometheus.py  /metrics through prometheus-client (multiprocess with several workers)
    delivery.py    alert delivery: log and webhook, once across processes
    prices.py      model prices for the dollars the cache saved
    savings.py     CacheSavings, the cache's own savings counter (/api/cache/stats)
    service.py     Telemetry: wires the above, runs the sampler, answers the routes

Business code never imports this package; app.py builds `Telemetry` in its lifespan.
"""

from promptrelay.telemetry.alerts import AlertManager, Thresholds, evaluate
from promptrelay.telemetry.recommend import recommend
from promptrelay.telemetry.service import Sources, Telemetry
from promptrelay.telemetry.snapshot import Snapshot, Tuning
from promptrelay.telemetry.stats import RequestStats

__all__ = [
    "AlertManager",
    "RequestStats",
    "Snapshot",
    "Sources",
    "Telemetry",
    "Thresholds",
    "Tuning",
    "evaluate",
    "recommend",
]
