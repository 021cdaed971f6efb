"""Ways to run `FakeUpstream`: in a daemon thread (tests) or blocking (the CLI)."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from promptrelay.devtools.fake_config import FakeConfig, validate_knobs
from promptrelay.devtools.fake_server import FakeUpstream

__all__ = ["FakeUpstreamThread", "run_fake_upstream"]

_T = TypeVar("_T")
_CALL_TIMEOUT_S = 10.0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on Windows)
        return asyncio.new_event_loop
    return uvloop.new_event_loop


class FakeUpstreamThread:
    """A `FakeUpstream` on its own event loop in a daemon thread.

    Usable from sync and async code alike, since the caller's loop is never involved:

        with FakeUpstreamThread(FakeConfig(latency_ms=5)) as fake:
            ...  # point the client at fake.url
            fake.configure(fail_next=2)
            assert fake.stats()["requests"] == 3

    `stats`, `reset` and `configure` run on the server's loop and wait for it, so they
    are thread-safe and see a consistent snapshot.
    """

    def __init__(
        self,
        config: FakeConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rng: random.Random | None = None,
        prefix: str = "",
    ) -> None:
        self.upstream = FakeUpstream(config, rng=rng, prefix=prefix)
        self._host, self._port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeUpstreamThread:
        """Start the thread and wait until the server listens (errors re-raised here)."""
        if self._thread is not None:
            raise RuntimeError("FakeUpstreamThread already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = loop = _loop_factory()()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.upstream.start(self._host, self._port))
            except BaseException as exc:
                failure.append(exc)
            ready.set()
            if not failure:
                loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = self._loop = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop the server and the thread; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        try:
            asyncio.run_coroutine_threadsafe(self.upstream.stop(), loop).result(_CALL_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_CALL_TIMEOUT_S)

    def __enter__(self) -> FakeUpstreamThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, fn: Callable[[], _T]) -> _T:
        if self._loop is None:
            raise RuntimeError("FakeUpstreamThread is not running")

        async def on_loop() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(on_loop(), self._loop).result(_CALL_TIMEOUT_S)

    @property
    def url(self) -> str:
        return self.upstream.url

    @property
    def port(self) -> int:
        return self.upstream.port

    @property
    def config(self) -> FakeConfig:
        """The live config object; change it through `configure`, not by assignment."""
        return self.upstream.config

    def stats(self) -> dict[str, Any]:
        return self._call(self.upstream.stats)

    def reset(self) -> None:
        self._call(self.upstream.reset)

    def configure(self, **knobs: Any) -> None:
        """Change knobs, e.g. `configure(fail_next=2, retry_after=1)`; ValueError if bad."""
        validate_knobs(knobs)  # raise in the caller's thread, with its traceback
        self._call(lambda: self.upstream.configure(**knobs))


async def _serve(host: str, port: int, config: FakeConfig) -> None:
    upstream = FakeUpstream(config)
    bound = await upstream.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
            pass
    print(f"fake upstream listening on http://{host}:{bound}", flush=True)
    try:
        await stop.wait()
    finally:
        await upstream.stop()


def run_fake_upstream(host: str, port: int, config: FakeConfig) -> None:
    """Serve until SIGINT/SIGTERM (blocking). Prints one line with the URL when ready."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            runner.run(_serve(host, port, config))
        except KeyboardInterrupt:
            print("fake upstream stopped", file=sys.stderr)
