"""``faceaudit serve``: run the Rekognition-compatible HTTP server under uvicorn.

The socket is bound here (port 0 picks a free port), then either

* one process (the default): the engine, store and service are built once
  and requests run on a thread pool (``threads``) -- the engine serialises its
  own CPU-bound work, store reads run in parallel;
* ``workers`` > 1 processes sharing the socket (uvicorn's supervisor), each
  building its own engine and store from an app factory
  (faceaudit.server.app.create_app_from_env); EmbeddedStore is safe across
  processes (SQLite WAL), PostgresStore gives each worker its own connection pool,
  and each worker loads the models (~1 s, its own memory).

At start a line ``faceaudit: search on the BACKEND: ...`` says when collections are searched
approximately (``--approximate-above`` / FACEAUDIT_APPROXIMATE_ABOVE, else the backend's
default) and that audits and public-safety collections stay exact.  When the server accepts
requests, one line ``faceaudit: listening on http://HOST:PORT`` goes to stderr.  SIGINT/SIGTERM shut down gracefully:
in-flight requests finish (up to ``GRACEFUL_SHUTDOWN_SECONDS``), then the
store is closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import sys

from faceaudit.server.access import StoreKeys
from faceaudit.server.app import DEFAULT_THREADS, attach_console, build_app, configure_logging
from faceaudit.server.credentials import open_keys, usage_note
from faceaudit.settings import (
    DATABASE_ENV,
    ENGINE_ENV,
    SERVE_BUCKET_DIR_ENV,
    SERVE_DATA_DIR_ENV,
    SERVE_REGION_ENV,
    SERVE_REPORTS_DIR_ENV,
    SERVE_THREADS_ENV,
    Settings,
)
from faceaudit.storage import search_mode_note

GRACEFUL_SHUTDOWN_SECONDS = 30
KEEP_ALIVE_SECONDS = 5  # an idle connection is closed after this long
MAX_HEAD_BYTES = 16 * 1024  # request line + headers; SigV4 headers are ~1 kB
WORKER_READY_TIMEOUT = 120
OPEN_FILES_TARGET = 65536  # soft open-file limit asked for (the connection cap follows it)


def _raise_open_file_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (at most OPEN_FILES_TARGET), as Go's runtime does.

    The common default soft limit of 1024 would cap connections at 384
    (faceaudit.server.protocol); raising it needs no privilege.  Workers inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_TARGET if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_TARGET)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # keep the limit we have; the cap adapts to it


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto given explicitly: accepted sockets inherit it, and asyncio turns Nagle off (TCP_NODELAY)
    # only on sockets whose proto is IPPROTO_TCP. With proto 0 every response's body waited for
    # the client's delayed ACK of its headers: ~40 ms on each request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _announce(url: str) -> None:
    print(f"faceaudit: listening on {url}", file=sys.stderr, flush=True)


def _say_search_mode(database: str | None) -> None:
    # printed, not logged as well: the log is this same stderr (configure_logging), so a second
    # copy would only repeat it
    note = search_mode_note(database, Settings.from_env().approximate_above)
    print(f"faceaudit: {note}", file=sys.stderr, flush=True)


def _uvicorn_config(app, workers: int):
    import uvicorn

    from faceaudit.server.protocol import ACCEPT_BURST, GuardedH11Protocol

    # No limit_concurrency: it answers 503 to every request once that many
    # connections are open, so a flood of idle ones would lock clients out;
    # GuardedH11Protocol caps connections by evicting the slowest instead.
    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=workers,
        lifespan="on",
        http=GuardedH11Protocol,
        backlog=ACCEPT_BURST,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        ws="none",
        access_log=False,  # the app logs one line per request itself
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        log_level="info",
    )


def serve(*, host: str = "127.0.0.1", port: int = 8000, data_dir: str, bucket_dir: str | None = None,
          workers: int = 1, threads: int = DEFAULT_THREADS, region: str | None = None,
          engine: str | None = None, reports_dir: str | None = None, database: str | None = None) -> int:
    """``engine``: the engine's name (faceaudit.runtime.ENGINES; default FACEAUDIT_ENGINE, else sface).
    ``reports_dir``: the audit reports the web console at /console lists.
    ``database``: faceaudit.storage.open_store's choice (None: embedded in ``data_dir``)."""
    configure_logging()
    _raise_open_file_limit()
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    # Before any worker starts: the single-key start's pair is taken in (or generated) once.
    keys = open_keys(data_dir, database=database)
    try:
        sock = _bind(host, port)
    except BaseException:
        keys.store.close()
        raise
    url = _url(host, sock.getsockname()[1])
    # Which search the store will run (the workers' stores read the same setting) is said before
    # any model loads: an operator should not have to guess whether results can be approximate.
    _say_search_mode(database)
    if keys.loaded is not None and keys.loaded.source == "generated":
        print(usage_note(keys.loaded, url), file=sys.stderr, flush=True)
    for warning in keys.warnings():
        logging.getLogger("faceaudit.server").warning("keys: %s", warning)
    if workers > 1:
        keys.store.close()  # each worker opens its own
        return _serve_workers(sock, url, workers, data_dir, bucket_dir, threads, region, engine, reports_dir,
                              database)
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully;
    # with these handlers that ends here as a normal exit (status 0), not a death by signal.
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    app = None
    try:
        app = build_app(data_dir, bucket_dir=bucket_dir, threads=threads, region=region,
                        keys=StoreKeys(keys.store), engine=engine, database=database)
        attach_console(app, keys.store, data_dir, reports_dir)
        return asyncio.run(_serve_single(app, sock, url))
    except _Stopped:
        return 0
    finally:
        if app is not None:
            app.close()  # no-op when the lifespan shutdown already ran
        else:
            keys.store.close()
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Stopped(Exception):
    pass


def _stop(signum, frame) -> None:
    raise _Stopped()


async def _serve_single(app, sock: socket.socket, url: str) -> int:
    import uvicorn
    server = uvicorn.Server(_uvicorn_config(app, 1))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        _announce(url)
    await task
    return 0 if server.started else 1


def _serve_workers(sock: socket.socket, url: str, workers: int, data_dir: str,
                   bucket_dir: str | None, threads: int, region: str | None, engine: str | None,
                   reports_dir: str | None = None, database: str | None = None) -> int:
    from uvicorn.supervisors import Multiprocess

    # Workers start from an import string, so their options travel in the environment, where
    # create_app_from_env reads them back through Settings ("" = unset).
    os.environ[SERVE_DATA_DIR_ENV] = os.path.abspath(data_dir)
    os.environ[SERVE_BUCKET_DIR_ENV] = os.path.abspath(bucket_dir) if bucket_dir else ""
    os.environ[SERVE_THREADS_ENV] = str(threads)
    os.environ[SERVE_REGION_ENV] = region or ""
    os.environ[SERVE_REPORTS_DIR_ENV] = os.path.abspath(reports_dir) if reports_dir else ""
    os.environ[DATABASE_ENV] = database or ""  # each worker opens its own store (and pool)
    if engine:  # workers build the engine FACEAUDIT_ENGINE names (faceaudit.runtime.default_engine)
        os.environ[ENGINE_ENV] = engine
    config = _uvicorn_config("faceaudit.server.app:create_app_from_env", workers)

    class _Supervisor(Multiprocess):
        def init_processes(self) -> None:
            super().init_processes()
            ready = [p.wait_until_ready(WORKER_READY_TIMEOUT, self.should_exit) for p in self.processes]
            if all(ready):
                _announce(url)
            else:
                logging.getLogger("faceaudit.server").error(
                    "not every worker became ready within %d s", WORKER_READY_TIMEOUT)

    try:
        _Supervisor(config, sockets=[sock]).run()
    finally:
        sock.close()
    return 0
