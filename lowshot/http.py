"""Polite HTTP: one rate limit shared by every request, retries with capped exponential backoff and
jitter that honour Retry-After, and counters of why requests were retried.

Policy objects in the spirit of urllib3's `util/retry.py` and scrapy's `downloadermiddlewares/retry.py`:
retry only what can succeed on retry (timeouts, dropped connections, 429, 5xx), never a 404.
"""

from __future__ import annotations

import collections
import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass, field

import requests

from lowshot import __version__

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = (
    f"lowshot/{__version__} (research dataset builder; polite: rate-limited, honours Retry-After; "
    "https://github.com/lowshot/lowshot)"
)
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class HttpError(OSError):
    """A request that failed for good: a non-retryable status, or retries exhausted."""

    def __init__(self, url: str, status: int | None, reason: str) -> None:
        super().__init__(f"GET {url} failed: {reason}")
        self.url, self.status, self.reason = url, status, reason


class RateLimiter:
    """At most `requests` request starts in any window of `per_seconds`, across all threads.

    A sliding window over the start times of the last `requests` requests: a new request waits until the
    oldest of them is at least `per_seconds` old, so no window of that length ever holds more.
    """

    def __init__(self, requests: int, per_seconds: float, *, margin_s: float = 0.05, clock=time.monotonic,
                 sleep=time.sleep) -> None:
        if requests < 1 or per_seconds <= 0:
            raise ValueError(f"rate limit must be >= 1 request per > 0 s, got {requests} per {per_seconds}")
        self.requests, self.per_seconds = requests, per_seconds
        # the server sees a request a little after it starts, and that delay varies: spacing starts by a
        # margin more than the window keeps the limit in the server's own log too
        self.margin_s = margin_s
        self._starts: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep

    def acquire(self) -> None:
        """Block until a request may start, and record its start."""
        while True:
            with self._lock:
                now = self._clock()
                if len(self._starts) < self.requests:
                    self._starts.append(now)
                    return
                wait = self._starts[0] + self.per_seconds + self.margin_s - now
                if wait <= 0:
                    self._starts.popleft()
                    self._starts.append(now)
                    return
            self._sleep(wait)


@dataclass
class RetryPolicy:
    """Capped exponential backoff with full jitter; a server's Retry-After wins when it is longer."""

    retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    sleep: object = time.sleep

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        cap = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        backoff = cap / 2 + self.rng.uniform(0, cap / 2)
        if retry_after is not None:
            return min(max(backoff, retry_after), max(self.max_backoff_s, retry_after))
        return backoff

    def sleep_before_retry(self, attempt: int, retry_after: float | None) -> None:
        self.sleep(self.delay(attempt, retry_after))  # type: ignore[operator]


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpClient:
    """`requests` session with a shared rate limit, retries, a descriptive User-Agent and retry counters."""

    def __init__(
        self,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.rate_limiter = rate_limiter
        self.stats: collections.Counter[str] = collections.Counter()
        self._local = threading.local()
        self.user_agent = user_agent

    @property
    def session(self) -> requests.Session:
        # one Session per thread: requests.Session is not documented as thread-safe
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers["User-Agent"] = self.user_agent
            self._local.session = s
        return s

    def get(self, url: str, *, headers: dict[str, str] | None = None, stream: bool = False) -> requests.Response:
        """GET with retries. Returns the response for 2xx and 416; raises HttpError otherwise."""
        attempt = 0
        while True:
            if self.rate_limiter is not None:
                self.rate_limiter.acquire()
            self.stats["requests"] += 1
            retry_after: float | None = None
            try:
                resp = self.session.get(url, headers=headers, timeout=self.timeout_s, stream=stream)
            except requests.Timeout:
                reason = "timeout"
            except requests.ConnectionError:
                reason = "connection_error"
            else:
                if resp.status_code < 300 or resp.status_code == 416:
                    return resp
                reason = f"http_{resp.status_code}"
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                resp.close()
                if resp.status_code not in RETRYABLE_STATUSES:
                    raise HttpError(url, resp.status_code, reason)
            attempt += 1
            if attempt > self.retry.retries:
                self.stats[f"failed/{reason}"] += 1
                raise HttpError(url, None if not reason.startswith("http_") else int(reason[5:]),
                                f"{reason} after {self.retry.retries} retries")
            self.stats[f"retry/{reason}"] += 1
            log.debug("retry %d of %s after %s", attempt, url, reason)
            self.retry.sleep_before_retry(attempt, retry_after)
