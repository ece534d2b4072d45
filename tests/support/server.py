"""A real `faceaudit serve` process for tests, and boto3 clients pointed at it.

Shared by tests/server and tests/audit (their conftest.py files hold the fixtures).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

TEST_ACCESS_KEY_ID = "FATESTACCESSKEY00001"
TEST_SECRET_ACCESS_KEY = "faceaudit-test-secret-0123456789abcdefghij"
STARTUP_TIMEOUT = 90.0
_LISTENING = re.compile(r"faceaudit: listening on (http://\S+)")


def faceaudit_command() -> list[str]:
    """The installed console script next to this interpreter (as a user runs it)."""
    script = shutil.which("faceaudit", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "faceaudit.cli"]


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def error_code(self) -> str | None:
        return self.json.get("__type") if self.status >= 400 else None

    @property
    def request_id(self) -> str | None:
        return {k.lower(): v for k, v in self.headers.items()}.get("x-amzn-requestid")


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

    def faceaudit_client(self, *, access_key_id: str | None = None, secret_access_key: str | None = None,
                         region_name: str = "us-east-1", **config):
        """A boto3 client for faceaudit's own operations (FaceAuditService.*) on this server."""
        import botocore.config

        import faceaudit
        config.setdefault("retries", {"max_attempts": 1})
        return faceaudit.client(
            self.endpoint_url, region_name=region_name,
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=botocore.config.Config(**config))

    def post(self, body: bytes | dict, target: str | None = "RekognitionService.DetectFaces", *,
             sign: bool = True, access_key_id: str | None = None, secret_access_key: str | None = None,
             when: datetime | None = None, headers: dict | None = None) -> RawResponse:
        """A hand-made ``POST /`` (urllib), signed by botocore's SigV4 signer unless ``sign=False``.

        ``when`` signs as if the clock said so (e.g. 20 minutes ago).
        """
        import urllib.error
        import urllib.request

        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"Content-Type": "application/x-amz-json-1.1", **(headers or {})}
        if target is not None:
            sent["X-Amz-Target"] = target
        if sign:
            request = AWSRequest(method="POST", url=self.endpoint_url + "/", data=data, headers=sent)
            signer = SigV4Auth(Credentials(access_key_id or self.access_key_id,
                                           secret_access_key or self.secret_access_key),
                               "rekognition", "us-east-1")
            if when is None:
                signer.add_auth(request)
            else:
                naive_utc = when.astimezone(UTC).replace(tzinfo=None)
                with mock.patch("botocore.auth.get_current_datetime", return_value=naive_utc):
                    signer.add_auth(request)
            sent = dict(request.headers.items())
        req = urllib.request.Request(self.endpoint_url + "/", data=data, headers=sent, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as answer:
                return RawResponse(answer.status, dict(answer.headers.items()), answer.read())
        except urllib.error.HTTPError as error:
            return RawResponse(error.code, dict(error.headers.items()), error.read())

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

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(data_dir: Path, *,
                 credentials: tuple[str, str] | None = (TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY),
                 extra_args: tuple[str, ...] = (),
                 open_files: int | tuple[int, int] | None = None) -> RunningServer:
    """Start ``faceaudit serve --port 0`` and wait for its "listening on" line.

    ``open_files`` lowers the server's open-file limit (RLIMIT_NOFILE), e.g. to 1024
    (soft and hard), or to a (soft, hard) pair.
    """
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
        stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, env=env,
        # preexec_fn: the only way to set a child's rlimit without an external tool; tests
        # start servers from one thread.
        preexec_fn=None if open_files is None else lambda: _limit_open_files(open_files))
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


def _limit_open_files(limit: int | tuple[int, int]) -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_NOFILE, limit if isinstance(limit, tuple) else (limit, limit))


def process_rss_bytes(pid: int) -> int:
    """Resident set size of a process now (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fresh_log_path(data_dir: Path) -> Path:
    """``<data dir>-server-N.log`` beside the data dir: one log file per start."""
    for n in range(1, 10_000):
        path = data_dir.parent / f"{data_dir.name}-server-{n}.log"
        if not path.exists():
            return path
    raise RuntimeError("too many server logs")


def share_review_key(from_dir: Path, to_dir: Path) -> None:
    """Copy one server's review.key into another's data directory (made 0700 if absent), as an
    operator does for each further host on one PostgreSQL (docs/accountability.md)."""
    to_dir = Path(to_dir)
    to_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = to_dir / "review.key"
    target.write_bytes((Path(from_dir) / "review.key").read_bytes())
    os.chmod(target, 0o600)
