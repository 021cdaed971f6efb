"""Resilience: the circuit breaker (pure machine + async shell) and the retry policy/loop."""

from promptrelay.resilience.breaker import (
    BreakerMachine,
    BreakerState,
    BreakerTransition,
    Decision,
    Reason,
    Ticket,
    TransitionListener,
    is_breaker_failure,
)
from promptrelay.resilience.redis_state import RedisBreakerState
from promptrelay.resilience.retry import (
    RETRYABLE_STATUSES,
    Outcome,
    RetryEvent,
    RetryPolicy,
    RetryResult,
    is_retryable,
    parse_retry_after,
    run_with_retries,
)
from promptrelay.resilience.shared import CircuitBreaker, SharedBreakerState, SharedStateError

__all__ = [
    "RETRYABLE_STATUSES",
    "BreakerMachine",
    "BreakerState",
    "BreakerTransition",
    "CircuitBreaker",
    "Decision",
    "Outcome",
    "Reason",
    "RedisBreakerState",
    "RetryEvent",
    "RetryPolicy",
    "RetryResult",
    "SharedBreakerState",
    "SharedStateError",
    "Ticket",
    "TransitionListener",
    "is_breaker_failure",
    "is_retryable",
    "parse_retry_after",
    "run_with_retries",
]
