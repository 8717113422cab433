"""The politeness policy: one rate limit across threads, retries only of what can succeed, Retry-After."""

from __future__ import annotations

import http.server
import random
import threading
import time

import pytest

from lowshot.http import HttpClient, HttpError, RateLimiter, RetryPolicy, parse_retry_after


def max_in_window(times: list[float], window: float) -> int:
    """Most request starts inside any half-open window of `window` seconds."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_rate_limit_holds_in_every_window_across_threads():
    limiter = RateLimiter(5, 0.4)
    starts: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(5):
            limiter.acquire()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(starts) == 20
    assert max_in_window(starts, 0.4) <= 5
    # ...and it sits just under the limit rather than far below it: 20 starts need 3 full windows
    assert time.monotonic() - t0 < 3 * 0.4 + 0.5


def test_rate_limit_with_a_fake_clock_never_exceeds():
    now = [0.0]
    limiter = RateLimiter(10, 5.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    starts = []
    for _ in range(57):
        limiter.acquire()
        starts.append(now[0])
        now[0] += random.Random(len(starts)).uniform(0, 0.2)
    assert max_in_window(starts, 5.0) == 10


def test_backoff_is_capped_jittered_and_yields_to_retry_after():
    policy = RetryPolicy(retries=8, backoff_s=1.0, max_backoff_s=10.0, rng=random.Random(0))
    delays = [policy.delay(a, None) for a in range(1, 9)]
    assert all(0.5 <= d <= 1.0 for d in delays[:1])
    assert all(d <= 10.0 for d in delays) and max(delays) > 5.0
    assert len(set(delays)) == len(delays)  # jittered
    assert policy.delay(1, 30.0) == 30.0  # a server's Retry-After wins over a shorter backoff


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 20))
    assert 15 < parse_retry_after(when) <= 21


class _Handler(http.server.BaseHTTPRequestHandler):
    plan: dict[str, list[tuple[int, dict]]] = {}
    seen: list[str] = []

    def do_GET(self):  # noqa: N802
        self.seen.append(self.path)
        queue = self.plan.get(self.path, [])
        status, headers = queue.pop(0) if queue else (200, {})
        body = b"ok"
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.plan, _Handler.seen = {}, []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Handler
    srv.shutdown()


def test_client_retries_429_and_503_honouring_retry_after(server):
    base, handler = server
    handler.plan = {"/a": [(429, {"Retry-After": "1"}), (503, {}), (200, {})]}
    sleeps = []
    client = HttpClient(retry=RetryPolicy(retries=3, backoff_s=0.01, sleep=sleeps.append))
    assert client.get(base + "/a").text == "ok"
    assert handler.seen == ["/a"] * 3
    assert sleeps[0] >= 1.0 and sleeps[1] < 1.0
    assert client.stats["retry/http_429"] == 1 and client.stats["retry/http_503"] == 1
    assert "lowshot" in client.session.headers["User-Agent"]


def test_client_does_not_retry_404_and_gives_up_after_retries(server):
    base, handler = server
    handler.plan = {"/missing": [(404, {})], "/down": [(500, {})] * 5}
    client = HttpClient(retry=RetryPolicy(retries=2, backoff_s=0.001, sleep=lambda s: None))
    with pytest.raises(HttpError) as e:
        client.get(base + "/missing")
    assert e.value.status == 404 and handler.seen == ["/missing"]
    with pytest.raises(HttpError, match="after 2 retries"):
        client.get(base + "/down")
    assert handler.seen.count("/down") == 3


def test_client_retries_connection_errors():
    client = HttpClient(timeout_s=0.5, retry=RetryPolicy(retries=1, backoff_s=0.001, sleep=lambda s: None))
    with pytest.raises(HttpError, match="connection_error"):
        client.get("http://127.0.0.1:9/")  # discard port: nothing listens
    assert client.stats["retry/connection_error"] == 1
