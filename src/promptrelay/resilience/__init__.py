"""Resilience: the circuit breaker (pure machine + async shell, probe lease) and retries."""

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
from promptrelay.resilience.lease import ProbeLease
from promptrelay.resilience.redis_state import RedisBreakerState, RedisRunner
from promptrelay.resilience.retry import (
    RETRYABLE_STATUSES,
    HeadHook,
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
    "HeadHook",
    "Outcome",
    "ProbeLease",
    "Reason",
    "RedisBreakerState",
    "RedisRunner",
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
