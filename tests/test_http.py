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


class FakeClocks:
    """One process's clocks: its own monotonic origin, a wall clock shared by every process."""

    def __init__(self, wall: list[float], mono_origin: float) -> None:
        self.wall, self.origin = wall, mono_origin

    def mono(self) -> float:
        return self.wall[0] - self.origin

    def sleep(self, s: float) -> None:
        self.wall[0] += s

    def limiter(self, state_file, requests=10, per_seconds=5.0) -> RateLimiter:
        return RateLimiter(requests, per_seconds, clock=self.mono, sleep=self.sleep, wall_clock=lambda: self.wall[0],
                           state_file=state_file)


def recorded(state) -> list[float]:
    return [float(x) for x in state.read_text().splitlines()]


def test_a_restarted_limiter_waits_for_the_starts_of_the_one_before(tmp_path):
    wall = [1_000.0]
    state = tmp_path / "starts.txt"
    limiter = FakeClocks(wall, mono_origin=900.0).limiter(state)
    starts = []
    for _ in range(7):
        limiter.acquire()
        starts.append(wall[0])
        # recorded before acquire returned, i.e. before the request could be sent
        assert recorded(state)[-1] == pytest.approx(wall[0])
        wall[0] += 0.1
    # "killed"; a new process (another monotonic origin) starts at once and asks for 20 more
    second = FakeClocks(wall, mono_origin=-5_000.0).limiter(state)
    for _ in range(20):
        second.acquire()
        starts.append(wall[0])
    assert max_in_window(starts, 5.0) == 10
    # without the log the new process would have started 10 at once: 17 in one window


def test_request_log_stays_short_and_survives_a_cut_line(tmp_path, caplog):
    wall = [0.0]
    state = tmp_path / "starts.txt"
    limiter = FakeClocks(wall, 0.0).limiter(state, requests=3, per_seconds=1.0)
    for _ in range(2 * RateLimiter.COMPACT_EVERY):
        limiter.acquire()
    assert len(recorded(state)) < RateLimiter.COMPACT_EVERY  # compacted now and then, never only growing
    # a kill in the middle of an append leaves a cut last line: that request was never sent
    last = recorded(state)[-3:]
    with open(state, "a") as f:
        f.write("junk\n" + f"{wall[0]:.6f}"[:4])
    again = FakeClocks(wall, 0.0).limiter(state, requests=3, per_seconds=1.0)
    assert "skipping unreadable line 'junk'" in caplog.text
    assert recorded(state) == pytest.approx(last)  # compacted at start: clean lines, the last 3 starts
    again.acquire()
    assert wall[0] >= last[0] + 1.0


def test_request_log_from_the_future_counts_as_now(tmp_path):
    state = tmp_path / "starts.txt"
    state.write_text("150.0\n150.5\n")  # the wall clock stepped back 100 s since these were written
    wall = [50.0]
    FakeClocks(wall, 0.0).limiter(state, requests=2, per_seconds=1.0).acquire()
    assert wall[0] >= 51.0  # never taken as long ago


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
