"""Issue 8's attacks, each reproduced against a real ``faceaudit serve`` process.

Raw sockets stand in for the attacker (they can hold a body back, dribble
headers, or never speak); botocore's own signer makes the signatures, so what
is signed is what boto3 would sign unless a test says otherwise.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from botocore.exceptions import ClientError

from faceaudit.server.protocol import connection_cap
from support.disk import fill_disk
from support.server import (
    RawResponse,
    RunningServer,
    process_cpu_seconds,
    process_rss_bytes,
    start_server,
)

MiB = 1024 * 1024
JSON = "application/x-amz-json-1.1"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> RunningServer:
    """A server of its own (these tests open thousands of connections), open-file limit 1024."""
    with start_server(tmp_path_factory.mktemp("hardening") / "data", open_files=1024) as running:
        yield running


# ------------------------------------------------------------------ raw HTTP helpers


def _address(server: RunningServer) -> tuple[str, int]:
    parts = urlsplit(server.endpoint_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def _connect(server: RunningServer, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(_address(server), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _head(headers: dict[str, str], target: str = "/") -> bytes:
    lines = [f"POST {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_response(sock: socket.socket, timeout: float) -> RawResponse | None:
    """One HTTP response from ``sock``, or None if the connection ends (or times out) without one."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = int({k.lower(): v for k, v in headers.items()}.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (TimeoutError, ConnectionError):
        return None
    return RawResponse(int(lines[0].split()[1]), headers, body)


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True once the server has closed the connection (EOF or reset) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


class _OnlySigning(SigV4Auth):
    """botocore's signer, but signing only the given headers (what a careless client might do)."""

    def __init__(self, credentials, service, region, only: tuple[str, ...]):
        super().__init__(credentials, service, region)
        self.only = only

    def headers_to_sign(self, request):
        signed = super().headers_to_sign(request)
        for name in list(signed.keys()):
            if name.lower() not in self.only:
                del signed[name]
        return signed


def _signed(server: RunningServer, body: bytes, target: str | None, *,
            only: tuple[str, ...] | None = None, extra: dict[str, str] | None = None,
            declared: int | None = None) -> dict[str, str]:
    """Request headers as boto3 signs them (or signing ``only`` some headers)."""
    headers = {"Content-Type": JSON, **(extra or {})}
    if target is not None:
        headers["X-Amz-Target"] = target
    request = AWSRequest(method="POST", url=server.endpoint_url + "/", data=body, headers=headers)
    creds = BotoCredentials(server.access_key_id, server.secret_access_key)
    signer = (SigV4Auth(creds, "rekognition", "us-east-1") if only is None
              else _OnlySigning(creds, "rekognition", "us-east-1", only))
    signer.add_auth(request)
    out = dict(request.headers.items())
    out["Host"] = urlsplit(server.endpoint_url).netloc
    out["Content-Length"] = str(len(body) if declared is None else declared)
    return out


def _send(server: RunningServer, headers: dict[str, str], body: bytes, *,
          path: str = "/") -> RawResponse:
    with _connect(server) as sock:
        sock.sendall(_head(headers, path) + body)
        answer = _read_response(sock, 60)
    assert answer is not None, "no response"
    return answer


def _create_collection(server: RunningServer) -> str:
    name = f"hardening-{uuid.uuid4().hex[:12]}"
    server.client().create_collection(CollectionId=name)
    return name


# ------------------------------------------- finding 1: unauthenticated bodies cost nothing


UNAUTHENTICATED = {
    "no Authorization": ({}, "MissingAuthenticationTokenException"),
    "malformed": ({"Authorization": "AWS4-HMAC-SHA256 Credential=x"}, "IncompleteSignatureException"),
    "unknown key": ({"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDNOBODY0000000000/20260101/"
                                      "us-east-1/rekognition/aws4_request, SignedHeaders=host;x-amz-date, "
                                      "Signature=00", "X-Amz-Date": "20260101T000000Z"},
                    "UnrecognizedClientException"),
}


def test_unauthenticated_16mb_bodies_are_refused_before_reading(server):
    """64 connections declaring 16 MB without a valid signature: refused at once, memory flat."""
    before = process_rss_bytes(server.process.pid)
    sockets, kinds = [], list(UNAUTHENTICATED.values())
    for i in range(64):
        extra, _ = kinds[i % len(kinds)]
        sock = _connect(server)
        headers = {"Host": "x", "Content-Type": JSON, "X-Amz-Target": "RekognitionService.DetectFaces",
                   "Content-Length": str(16 * MiB), **extra}
        sock.sendall(_head(headers) + b"{" * 1024)  # a body is started and held back
        sockets.append(sock)
    started = time.monotonic()
    for i, sock in enumerate(sockets):
        answer = _read_response(sock, 10)
        assert answer is not None, f"connection {i} got no answer while holding its body"
        assert answer.status == 400 and answer.error_code == kinds[i % len(kinds)][1]
        assert _closed_by_server(sock, 5), "the server kept a connection with an unread body open"
        sock.close()
    assert time.monotonic() - started < 10
    growth = process_rss_bytes(server.process.pid) - before
    assert growth < 40 * MiB, f"server grew {growth / MiB:.0f} MiB for 64 refused requests"
    assert not any("dispatched=yes" in line for line in server.request_log()[-64:])


def test_in_flight_body_bytes_are_bounded_even_for_a_known_key(server):
    """Correctly signed 16 MiB requests whose bodies are held back: four fit the 64 MiB budget."""
    body = b'{"Image":{"Bytes":"' + b"A" * (16 * MiB - 22) + b'"}}'
    assert len(body) == 16 * MiB
    headers = _signed(server, body, "RekognitionService.DetectFaces")
    before = process_rss_bytes(server.process.pid)
    held = []
    for _ in range(4):
        sock = _connect(server)
        sock.sendall(_head(headers) + body[:-1])  # all but the last byte
        held.append(sock)
    time.sleep(0.5)
    refused = []
    for _ in range(8):
        sock = _connect(server)
        sock.sendall(_head(headers) + body[:1024])
        answer = _read_response(sock, 5)
        assert answer is not None and answer.status == 400, "over the budget: not refused at once"
        assert answer.error_code == "ThrottlingException"
        assert {k.lower(): v for k, v in answer.headers.items()}.get("retry-after") == "1"
        refused.append(sock)
    growth = process_rss_bytes(server.process.pid) - before
    assert growth < 64 * MiB + 48 * MiB, f"server grew {growth / MiB:.0f} MiB"
    for sock in held + refused:
        sock.close()
    time.sleep(0.5)  # the server sees the disconnects and releases the budget
    assert server.client().list_collections()["ResponseMetadata"]["HTTPStatusCode"] == 200
    with _connect(server) as sock:  # the whole budget is free again
        sock.sendall(_head(headers) + body)
        answer = _read_response(sock, 60)
    assert answer is not None and answer.error_code != "ThrottlingException"


# ------------------------------------------------ finding 2: slow and silent connections


def test_slow_headers_silent_connections_and_slow_bodies_are_closed(server):
    """Header deadline 10 s (whatever is dribbled), idle keep-alive 5 s, body idle 10 s."""
    silent = [_connect(server) for _ in range(20)]
    dribbling = [_connect(server) for _ in range(20)]
    for sock in dribbling:
        sock.sendall(b"POST / HTTP/1.1\r\n")
    body = b'{"CollectionId":"x"}'
    slow_body = _connect(server)
    slow_body.sendall(_head(_signed(server, body, "RekognitionService.DescribeCollection"))
                      + body[:5])
    keep_alive = _connect(server)
    ok_body = b"{}"
    keep_alive.sendall(_head(_signed(server, ok_body, "RekognitionService.ListCollections")) + ok_body)
    first = _read_response(keep_alive, 30)
    assert first is not None and first.status == 200

    started = time.monotonic()
    for second in range(14):  # one header line a second, as the attacker did
        for sock in dribbling:
            try:
                sock.sendall(f"X-Slow-{second}: 1\r\n".encode())
            except OSError:
                pass
        time.sleep(1)
        if second == 7:  # keep-alive idle (5 s) ends before the header deadline
            assert _closed_by_server(keep_alive, 0.1), "idle keep-alive connection still open at 7 s"
    elapsed = time.monotonic() - started
    assert elapsed < 20
    for group, name in ((silent, "silent"), (dribbling, "slow-header")):
        still_open = sum(not _closed_by_server(sock, 0.05) for sock in group)
        assert still_open == 0, f"{still_open} {name} connections still open after {elapsed:.0f} s"
    answer = _read_response(slow_body, 1)
    assert answer is not None and answer.error_code == "RequestTimeoutException"
    for sock in silent + dribbling + [slow_body, keep_alive]:
        sock.close()


def test_a_signed_request_is_served_while_1100_silent_connections_are_open(server):
    """Open-file limit 1024: the connections that waited longest make room for a new client."""
    silent = []
    try:
        for _ in range(1100):
            silent.append(_connect(server))
        time.sleep(0.5)
        client = server.client(connect_timeout=5, read_timeout=5)
        for _ in range(5):
            started = time.monotonic()
            client.list_collections()
            assert time.monotonic() - started < 2
        closed = sum(_closed_by_server(sock, 0.01) for sock in silent)
        assert closed >= 1100 - connection_cap(1024), f"only {closed} of 1100 were closed"
        assert "out of system resource" not in server.log()  # never EMFILE at accept
    finally:
        for sock in silent:
            sock.close()


def test_serve_raises_its_soft_open_file_limit_to_the_hard_one(tmp_path):
    with start_server(tmp_path / "data", open_files=(1024, 4096)) as running:
        limits = Path(f"/proc/{running.process.pid}/limits").read_text()
    line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
    assert line.split()[3:5] == ["4096", "4096"], line


# ------------------------------------------------- finding 4: validation stops at a list bound


def test_delete_faces_with_millions_of_ids_costs_little(server):
    ids = ",".join(['"a"'] * 3_300_000)
    body = ('{"CollectionId":"c","FaceIds":[' + ids + "]}").encode()
    assert len(body) < 16 * MiB
    headers = _signed(server, body, "RekognitionService.DeleteFaces")
    cpu_before = process_cpu_seconds(server.process.pid)
    answer = _send(server, headers, body)
    cpu = process_cpu_seconds(server.process.pid) - cpu_before
    assert answer.error_code == "InvalidParameterException"
    message = answer.json["Message"]
    assert message.startswith("1 validation error detected") and "less than or equal to 4096" in message
    assert len(message) < 2000
    assert cpu < 3.0, f"server used {cpu:.1f} s CPU on one oversized list"


# ---------------------------------------------- finding 5: what is acted on must be signed


def test_boto3_signs_the_operation_content_type_and_amz_headers(server):
    client = server.client()
    seen: list[str] = []
    client.meta.events.register("before-send.rekognition",
                                lambda request, **_: seen.append(request.headers["Authorization"]))
    client.list_collections()
    signed = seen[0].decode() if isinstance(seen[0], bytes) else seen[0]
    signed_headers = signed.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"content-type", "host", "x-amz-date", "x-amz-target"} <= set(signed_headers)


def test_an_unsigned_operation_header_cannot_be_swapped(server):
    name = _create_collection(server)
    body = json.dumps({"CollectionId": name}).encode()
    headers = _signed(server, body, "RekognitionService.DescribeCollection",
                      only=("host", "x-amz-date"))
    headers["X-Amz-Target"] = "RekognitionService.DeleteCollection"
    answer = _send(server, headers, body)
    assert answer.error_code == "InvalidSignatureException"
    message = answer.json["message"]
    assert "'X-Amz-Target'" in message and "must be a 'SignedHeader'" in message
    assert server.client().describe_collection(CollectionId=name)["FaceCount"] == 0  # still there


@pytest.mark.parametrize("extra, only, shown", [
    ({}, ("host", "x-amz-date", "x-amz-target"), "Content-Type"),
    ({"X-Amz-Meta": "1"}, ("host", "x-amz-date", "x-amz-target", "content-type"), "X-Amz-Meta"),
])
def test_content_type_and_every_amz_header_must_be_signed(server, extra, only, shown):
    body = b"{}"
    answer = _send(server, _signed(server, body, "RekognitionService.ListCollections",
                                   only=only, extra=extra), body)
    assert answer.error_code == "InvalidSignatureException"
    assert f"'{shown}' must be a 'SignedHeader'" in answer.json["message"]


def test_unsigned_payload_is_refused(server):
    body = json.dumps({"CollectionId": "anything"}).encode()
    headers = _signed(server, body, "RekognitionService.DeleteCollection",
                      extra={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    answer = _send(server, headers, b'{"CollectionId":"another"}')
    assert answer.error_code == "InvalidSignatureException"
    assert "UNSIGNED-PAYLOAD" in answer.json["message"]


class _PresignKeepingBody(SigV4QueryAuth):
    """botocore's presigner, keeping the JSON body in the body (it would move it to the query)."""

    def _modify_request_before_signing(self, request):
        data = request.data
        super()._modify_request_before_signing(request)
        request.data = data


def _presigned(server: RunningServer, body: bytes, target: str, *, expires: int,
               sign_target: bool = True) -> tuple[str, dict[str, str]]:
    headers = {"X-Amz-Target": target} if sign_target else {}
    request = AWSRequest(method="POST", url=server.endpoint_url + "/", data=body, headers=headers)
    _PresignKeepingBody(BotoCredentials(server.access_key_id, server.secret_access_key),
                        "rekognition", "us-east-1", expires=expires).add_auth(request)
    path = request.url[len(server.endpoint_url):]
    sent = {"Host": urlsplit(server.endpoint_url).netloc, "X-Amz-Target": target,
            "Content-Length": str(len(body))}
    return path, sent


def test_presigned_requests_are_read_only_short_lived_and_fix_their_operation(server):
    name = _create_collection(server)
    body = json.dumps({"CollectionId": name}).encode()

    path, headers = _presigned(server, body, "RekognitionService.DescribeCollection", expires=300)
    answer = _send(server, headers, body, path=path)
    assert answer.status == 200 and answer.json["FaceCount"] == 0

    path, headers = _presigned(server, body, "RekognitionService.DescribeCollection", expires=300,
                               sign_target=False)  # signs only host: the operation is not fixed
    headers["X-Amz-Target"] = "RekognitionService.DeleteCollection"
    answer = _send(server, headers, body, path=path)
    assert answer.error_code == "InvalidSignatureException"

    path, headers = _presigned(server, body, "RekognitionService.DeleteCollection", expires=300)
    answer = _send(server, headers, body, path=path)
    assert answer.error_code == "AccessDeniedException"
    assert "read-only" in answer.json["Message"]

    path, headers = _presigned(server, body, "RekognitionService.DescribeCollection",
                               expires=7 * 24 * 3600)
    answer = _send(server, headers, body, path=path)
    assert answer.error_code == "InvalidSignatureException"
    assert "at most 900 seconds" in answer.json["message"]
    assert server.client().describe_collection(CollectionId=name)["FaceCount"] == 0


# ---------------------------------------------------------- finding 7: a full disk, for real


def test_a_full_disk_is_reported_as_out_of_storage(small_disk, tmp_path):
    data_dir = small_disk / "data"
    with start_server(data_dir) as running:
        client = running.client()
        client.create_collection(CollectionId="before-full")
        filler = fill_disk(small_disk)
        error = None
        for i in range(200):  # SQLite may still have free pages for the first few writes
            try:
                client.create_collection(CollectionId=f"while-full-{i}-" + "x" * 200)
            except ClientError as exc:
                error = exc
                break
        assert error is not None, "200 collections were created on a full disk"
        assert error.response["Error"]["Code"] == "InternalServerError"
        assert "out of storage" in error.response["Error"]["Message"]
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        log = running.log()
        assert "out of storage in " + str(data_dir) in log
        filler.unlink()  # space is back: so is the service
        client.create_collection(CollectionId="after-full")
        assert {"before-full", "after-full"} <= set(client.list_collections()["CollectionIds"])
