"""Polite HTTP: one rate limit shared by every request, retries with capped exponential backoff and
jitter that honour Retry-After, and counters of why requests were retried.

Policy objects in the spirit of urllib3's `util/retry.py` and scrapy's `downloadermiddlewares/retry.py`:
retry only what can succeed on retry (timeouts, dropped connections, 429, 5xx), never a 404.
"""

from __future__ import annotations

import collections
import email.utils
import logging
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from lowshot import __version__
from lowshot.fsutil import atomic_write_bytes

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
    """At most `requests` request starts in any window of `per_seconds`, across all threads and restarts.

    A sliding window over the start times of the last `requests` requests: a new request waits until the
    oldest of them is at least `per_seconds` old, so no window of that length ever holds more.

    `state_file` carries the window across processes: a log of start times (wall clock, one per line). Each
    start is appended with one small write before `acquire` returns, i.e. before the request can be sent:
    a process killed at any moment (SIGKILL included) has recorded every request it sent, and the page
    cache keeps the record after the process dies, so no fsync is needed (a reboot outlasts any window).
    A new limiter starts from the starts it finds there. The log is compacted to the last `requests`
    starts by an atomic rewrite at start and every COMPACT_EVERY appends; a line a kill cut short is a
    request never sent, and is skipped.
    """

    COMPACT_EVERY = 256  # appends between rewrites of the log (an append costs ~1 us, a rewrite ~2.5 ms)

    def __init__(self, requests: int, per_seconds: float, *, margin_s: float = 0.05, clock=time.monotonic,
                 sleep=time.sleep, state_file: str | os.PathLike | None = None, wall_clock=time.time) -> None:
        if requests < 1 or per_seconds <= 0:
            raise ValueError(f"rate limit must be >= 1 request per > 0 s, got {requests} per {per_seconds}")
        self.requests, self.per_seconds = requests, per_seconds
        # the server sees a request a little after it starts, and that delay varies: spacing starts by a
        # margin more than the window keeps the limit in the server's own log too
        self.margin_s = margin_s
        self._starts: collections.deque[float] = collections.deque(maxlen=requests)
        self._lock = threading.Lock()
        self._clock, self._sleep, self._wall_clock = clock, sleep, wall_clock
        self.state_file = Path(state_file) if state_file is not None else None
        self._appends = 0
        if self.state_file is not None:
            self._starts.extend(self._load())
            self._compact()

    def acquire(self) -> None:
        """Block until a request may start, and record its start (in `state_file` too, when given)."""
        while True:
            with self._lock:
                now = self._clock()
                wait = 0.0
                if len(self._starts) == self.requests:
                    wait = self._starts[0] + self.per_seconds + self.margin_s - now
                if wait <= 0:
                    self._starts.append(now)  # a full deque drops its oldest start
                    if self.state_file is not None:
                        self._record(now)
                    return
            self._sleep(wait)

    def _wall(self, start: float) -> str:
        return f"{start + self._wall_clock() - self._clock():.6f}\n"

    def _record(self, start: float) -> None:
        self._appends += 1
        if self._appends % self.COMPACT_EVERY == 0:
            self._compact()
            return
        fd = os.open(self.state_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, self._wall(start).encode())  # one write: the whole line or (if killed) a cut one
        finally:
            os.close(fd)

    def _compact(self) -> None:
        atomic_write_bytes(self.state_file, "".join(self._wall(t) for t in self._starts).encode(), durable=False)

    def _load(self) -> list[float]:
        """The last `requests` starts in `state_file`, on this limiter's clock (none if it is absent)."""
        try:
            lines = self.state_file.read_text(encoding="ascii", errors="replace").split("\n")
        except FileNotFoundError:
            return []
        walls = []
        for line in lines[:-1]:  # a complete line ends with a newline: the last piece never counts
            try:
                walls.append(float(line))
            except ValueError:
                log.warning("%s: skipping unreadable line %r", self.state_file, line[:40])
        now, wall_now = self._clock(), self._wall_clock()
        # a start "in the future" (the wall clock stepped back) counts as now: never earlier than it was
        starts = sorted(min(now, now - (wall_now - w)) for w in walls if math.isfinite(w))
        return starts[-self.requests:]


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
