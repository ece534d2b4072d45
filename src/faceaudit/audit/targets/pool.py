"""A process pool for the local target: forkserver workers, one fresh pool on BrokenProcessPool.

Why forkserver: the calling process already runs threads (rich's progress
refresh, botocore, the thread backend), and forking a process that runs threads
can leave the child holding a lock no thread will ever release; a worker of the
local target died that way (BrokenProcessPool during its first DetectFaces) in
about one run of six. Forkserver workers are forked from a clean single-threaded
server process instead. Like spawn, it imports the calling script's main module
in each worker, so a script that starts a pool needs an
``if __name__ == "__main__":`` guard (the ``faceaudit`` command has one).

The server process keeps the environment it started with: settings a worker
needs (e.g. which models to load) must be passed to it, not left in os.environ.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from typing import Any


def worker_context() -> BaseContext:
    """forkserver where the platform has it (Linux, macOS), else spawn (Windows)."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


class RestartingPool:
    """``submit(fn, *args)`` on a ProcessPoolExecutor that is replaced by a fresh one when it
    breaks; each task is resubmitted once, so a task that itself kills its worker (twice)
    still fails with BrokenProcessPool."""

    def __init__(self, workers: int, initializer: Callable[..., object], initargs: tuple[Any, ...]):
        self.workers = workers
        self._initializer, self._initargs = initializer, initargs
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.restarts = 0  # pools replaced after breaking (for tests and logs)
        self._closed = False

    def _current(self, broken: ProcessPoolExecutor | None = None) -> ProcessPoolExecutor:
        """The live pool; a new one if there is none or ``broken`` is still the live one."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            if self._pool is not None and self._pool is broken:
                # No wait: this may run on the broken pool's own management thread.
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
                self.restarts += 1
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=worker_context(),
                                                 initializer=self._initializer, initargs=self._initargs)
            return self._pool

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        outer: Future[Any] = Future()
        self._attempt(outer, fn, args, retries=1, broken=None)
        return outer

    def _attempt(self, outer: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...], *,
                 retries: int, broken: ProcessPoolExecutor | None) -> None:
        if outer.cancelled():
            return
        try:
            pool = self._current(broken)
            inner = pool.submit(fn, *args)
        except RuntimeError as error:  # shut down, or (BrokenProcessPool) broken before the task ran
            outer.set_exception(error)
            return

        def finished(inner: Future[Any]) -> None:
            if outer.done():  # cancelled by the caller meanwhile
                return
            if inner.cancelled():
                outer.cancel()
                return
            error = inner.exception()
            if isinstance(error, BrokenProcessPool) and retries > 0:
                self._attempt(outer, fn, args, retries=retries - 1, broken=pool)
            elif error is not None:
                outer.set_exception(error)
            else:
                outer.set_result(inner.result())

        inner.add_done_callback(finished)
        outer.add_done_callback(lambda done: inner.cancel() if done.cancelled() else None)

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
