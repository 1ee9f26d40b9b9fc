"""The thread-pool WSGI mode's inline calls (``--inline auto``, :class:`InlinePolicy`).

The policy on its own (when calls go inline, when they go back to the pool, the
back-off), then through real sockets: a quick app ends up on the event loop thread, a
slow one keeps its threads and its concurrency, and an inline app that turns slow gives
its calls back to the pool, a streaming call mid-way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support import serve

from fcgibridge.client import FastCGIClient
from fcgibridge.server.wsgi import InlinePolicy

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
POOL_PREFIX = "fcgibridge-wsgi"


def test_calls_go_inline_after_a_streak_of_quick_pool_calls_only() -> None:
    policy = InlinePolicy(True)
    for _ in range(InlinePolicy.STREAK - 1):
        policy.pool_call(0.0001)
        policy.pool_call(InlinePolicy.FAST * 2)  # a slow one in the pool neither counts nor ends the streak
    assert not policy.inline
    policy.pool_call(0.0001)
    assert policy.inline


def test_an_inline_call_too_slow_ends_the_streak() -> None:
    policy = InlinePolicy(True)
    for _ in range(InlinePolicy.STREAK - 1):
        policy.pool_call(0.0001)
    assert policy.too_slow(time.perf_counter() - InlinePolicy.SLOW * 2, policy.waits() - 1)
    policy._retry_at = 0.0
    policy.pool_call(0.0001)
    assert not policy.inline


def test_a_slow_inline_call_gives_the_calls_back_to_the_pool_for_a_doubling_while() -> None:
    policy = InlinePolicy(True)
    backoffs = []
    for _ in range(3):
        for _ in range(InlinePolicy.STREAK):
            policy.pool_call(0.0001)
        assert policy.inline
        assert not policy.too_slow(time.perf_counter(), policy.waits())  # a quick one changes nothing
        # A long one that never gave up the CPU (it computed, or was preempted) neither.
        assert not policy.too_slow(time.perf_counter() - InlinePolicy.SLOW * 2, policy.waits())
        before = time.monotonic()
        assert policy.too_slow(time.perf_counter() - InlinePolicy.SLOW * 2, policy.waits() - 1)
        assert not policy.inline
        backoffs.append(policy._retry_at - before)
        for _ in range(InlinePolicy.STREAK):  # quick pool calls during the back-off do not count
            policy.pool_call(0.0001)
        assert not policy.inline
        policy._retry_at = 0.0  # the back-off is over
    assert [round(b) for b in backoffs] == [InlinePolicy.BACKOFF, InlinePolicy.BACKOFF * 2, InlinePolicy.BACKOFF * 4]


class ThreadNames:
    """A WSGI app answering with the name of the thread that runs it; ``/slow`` sleeps,
    ``/stream`` yields three pieces, with a sleep after the first."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, environ: Environ, start_response: StartResponse) -> Any:
        name = threading.current_thread().name
        self.names.append(name)
        start_response("200 OK", [("Content-Type", "text/plain")])
        path = environ["PATH_INFO"]
        if path == "/slow":
            time.sleep(0.3)
        if path == "/stream":
            return self.stream(name)
        return [name.encode()]

    @staticmethod
    def stream(name: str) -> Iterator[bytes]:
        yield name.encode() + b"|"
        time.sleep(0.01)  # the piece after this one is the first the server sees late
        yield threading.current_thread().name.encode() + b"|"
        yield threading.current_thread().name.encode()


def warmed_up(client: FastCGIClient) -> None:
    for _ in range(InlinePolicy.STREAK + 5):
        assert client.request("GET", "/").status == 200


def test_a_quick_app_ends_up_on_the_event_loop_thread() -> None:
    app = ThreadNames()
    with serve(app, inline="auto") as server:
        client = FastCGIClient(server.address)
        first = client.request("GET", "/").body.decode()
        warmed_up(client)
        last = client.request("GET", "/").body.decode()
    assert first.startswith(POOL_PREFIX)  # calls start in the pool
    assert not last.startswith(POOL_PREFIX), app.names[-10:]


def test_by_default_every_call_stays_in_the_pool() -> None:
    app = ThreadNames()
    with serve(app) as server:
        warmed_up(FastCGIClient(server.address))
    assert all(name.startswith(POOL_PREFIX) for name in app.names)


def test_an_inline_app_that_turns_slow_gives_its_calls_back_and_keeps_its_concurrency() -> None:
    app = ThreadNames()
    with serve(app, inline="auto") as server:
        client = FastCGIClient(server.address)
        warmed_up(client)
        assert client.request("GET", "/slow").status == 200  # inline, found slow
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda _: FastCGIClient(server.address).request("GET", "/slow"), range(4)))
        took = time.monotonic() - started
    assert [r.status for r in replies] == [200] * 4
    assert all(r.body.decode().startswith(POOL_PREFIX) for r in replies)
    assert took < 0.3 * 4 * 0.75, f"4 calls of 0.3 s took {took:.2f} s: they did not overlap"


def test_a_streaming_inline_call_that_runs_long_moves_to_a_thread_mid_way() -> None:
    app = ThreadNames()
    with serve(app, inline="auto") as server:
        client = FastCGIClient(server.address)
        warmed_up(client)
        body = client.request("GET", "/stream").body.decode()
        after = client.request("GET", "/").body.decode()
    first, second, third = body.split("|")
    assert not first.startswith(POOL_PREFIX) and second == first  # began inline
    assert third.startswith(POOL_PREFIX)  # went on in a pool thread
    assert after.startswith(POOL_PREFIX)  # and the next call is in the pool again


@pytest.mark.parametrize("sync", [True, False])
def test_sync_mode_is_not_the_policy(sync: bool) -> None:
    from fcgibridge.server.wsgi import WSGIAdapter

    adapter = WSGIAdapter(ThreadNames(), spool_threshold=1024, sync=sync)
    try:
        assert adapter.policy.enabled is not sync
    finally:
        adapter.close()


def test_one_call_in_probe_every_is_a_trial_and_none_during_a_back_off() -> None:
    policy = InlinePolicy(True)
    trials = [policy.probe() for _ in range(InlinePolicy.PROBE_EVERY * 3)]
    assert trials.count(True) == 3 and trials[InlinePolicy.PROBE_EVERY - 1]
    for _ in range(InlinePolicy.STREAK - 1):
        policy.quick_inline_call()
    assert not policy.inline
    policy.quick_inline_call()  # trials that were quick count towards the streak
    assert policy.inline
    assert policy.too_slow(time.perf_counter() - InlinePolicy.SLOW * 2, policy.waits() - 1)
    assert not any(policy.probe() for _ in range(InlinePolicy.PROBE_EVERY * 3))
