"""The retry policy: which failures are retried and how long to wait before the next try."""

from dataclasses import dataclass

from django.conf import settings
from tenacity import RetryCallState, wait_random_exponential

from .providers.base import ProviderError


class Interrupted(Exception):
    """The job is no longer ours to work on: the run stopped, paused or halted, or the
    lease was lost. Nothing more may be called for it."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_base: float
    backoff_max: float

    @classmethod
    def from_settings(cls) -> "RetryPolicy":
        return cls(
            max_attempts=settings.STUDIO_MAX_ATTEMPTS,
            backoff_base=settings.STUDIO_BACKOFF_BASE,
            backoff_max=settings.STUDIO_BACKOFF_MAX,
        )

    def backoff(self) -> wait_random_exponential:
        # Full jitter (AWS): uniform(0, min(max, base * 2^(n-1))); 2 s, 4 s, 8 s ceilings.
        return wait_random_exponential(multiplier=self.backoff_base, max=self.backoff_max)

    def wait(self, retry_state: RetryCallState) -> float:
        """Return seconds to wait: the jittered backoff, but never less than Retry-After."""
        backoff = self.backoff()(retry_state)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            return max(backoff, retry_after)
        return backoff


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, ProviderError) and error.retryable
