"""A real ``faceaudit serve`` for the HTTP tests, and boto3 clients pointed at it.

Fixtures (session-scoped; reuse them for operation tests):

* ``faceaudit_server`` -- a :class:`RunningServer`: the installed console
  script started on a free port of 127.0.0.1 with a temporary data dir and
  fixed credentials (``FACEAUDIT_ACCESS_KEY_ID``/``..._SECRET_ACCESS_KEY``).
  ``faceaudit_server.client(**config)`` makes a boto3 Rekognition client for
  it (no retries, so error tests see the first answer); ``.request_log()``
  gives its per-request log lines; ``.endpoint_url``, ``.data_dir`` ...
* ``rekognition`` -- one such boto3 client.

``start_server(...)`` starts further servers (e.g. without credentials in
the environment); use it as a context manager so they are stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TEST_ACCESS_KEY_ID = "FATESTACCESSKEY00001"
TEST_SECRET_ACCESS_KEY = "faceaudit-test-secret-0123456789abcdefghij"
STARTUP_TIMEOUT = 90.0
_LISTENING = re.compile(r"faceaudit: listening on (http://\S+)")


def faceaudit_command() -> list[str]:
    """The installed console script next to this interpreter (as a user runs it)."""
    script = shutil.which("faceaudit", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "faceaudit.cli"]


@dataclass
class RunningServer:
    process: subprocess.Popen
    endpoint_url: str
    data_dir: Path
    log_path: Path
    access_key_id: str | None
    secret_access_key: str | None
    _log_handle: object = field(repr=False, default=None)

    def client(self, *, access_key_id: str | None = None, secret_access_key: str | None = None,
               region_name: str = "us-east-1", **config):
        """A boto3 Rekognition client for this server; ``config`` goes to botocore's Config."""
        import boto3
        import botocore.config
        config.setdefault("retries", {"max_attempts": 1})
        return boto3.client(
            "rekognition", endpoint_url=self.endpoint_url, region_name=region_name,
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=botocore.config.Config(**config))

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def request_log(self) -> list[str]:
        """One line per request the server answered (see faceaudit.server.app)."""
        return [line for line in self.log().splitlines()
                if "faceaudit.server:" in line and " request_id=" in line]

    def log_for(self, request_id: str, timeout: float = 5.0) -> str:
        """The log line of one request (waits briefly: it is written after the response)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.request_log():
                if line.endswith(f"request_id={request_id}"):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line for request {request_id}:\n{self.log()[-3000:]}")
            time.sleep(0.02)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful shutdown) and wait; kill if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        return self.process.returncode

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(data_dir: Path, *,
                 credentials: tuple[str, str] | None = (TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY),
                 extra_args: tuple[str, ...] = ()) -> RunningServer:
    """Start ``faceaudit serve --port 0`` and wait for its "listening on" line."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("FACEAUDIT_ACCESS_KEY_ID", "FACEAUDIT_SECRET_ACCESS_KEY")}
    if credentials is not None:
        env["FACEAUDIT_ACCESS_KEY_ID"], env["FACEAUDIT_SECRET_ACCESS_KEY"] = credentials
    log_path = _fresh_log_path(data_dir)
    handle = open(log_path, "wb")
    process = subprocess.Popen(
        [*faceaudit_command(), "serve", "--host", "127.0.0.1", "--port", "0",
         "--data-dir", str(data_dir), *extra_args],
        stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, env=env)
    server = RunningServer(process, "", data_dir, log_path,
                           credentials[0] if credentials else None,
                           credentials[1] if credentials else None, handle)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        text = log_path.read_text(encoding="utf-8", errors="replace")
        match = _LISTENING.search(text)
        if match and process.poll() is None:
            server.endpoint_url = match.group(1)
            return server
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(f"faceaudit serve exited with {process.returncode}:\n{text[-5000:]}")
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"faceaudit serve not ready after {STARTUP_TIMEOUT:.0f} s:\n{text[-5000:]}")
        time.sleep(0.05)


def _fresh_log_path(data_dir: Path) -> Path:
    """``<data dir>-server-N.log`` beside the data dir: one log file per start."""
    for n in range(1, 10_000):
        path = data_dir.parent / f"{data_dir.name}-server-{n}.log"
        if not path.exists():
            return path
    raise RuntimeError("too many server logs")


@pytest.fixture(scope="session")
def faceaudit_server(tmp_path_factory) -> RunningServer:
    with start_server(tmp_path_factory.mktemp("faceaudit-server") / "data") as server:
        yield server


@pytest.fixture(scope="session")
def rekognition(faceaudit_server):
    """A boto3 Rekognition client for the shared server (no retries)."""
    return faceaudit_server.client()


# ---------------------------------------------------------------------------------------
# tests/test_cli.py and tests/test_detect_compare.py do ``from conftest import encode``,
# meaning tests/conftest.py.  pytest imports every conftest.py outside a package under
# the module name "conftest", so after this file is loaded, sys.modules["conftest"] would
# be *this* module and their import would fail.  Point the name back at tests/conftest.py.
_ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
_THIS_MODULE = sys.modules[__name__]


def pytest_plugin_registered(plugin, manager):
    if sys.modules.get("conftest") is not _THIS_MODULE:
        return
    for candidate in manager.get_plugins():
        file = getattr(candidate, "__file__", None)
        if file and Path(file).resolve() == _ROOT_CONFTEST:
            sys.modules["conftest"] = candidate
            return
