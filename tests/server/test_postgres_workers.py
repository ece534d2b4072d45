"""`faceaudit serve --workers 2 --database postgresql://...`: both worker processes serve, from
several client threads at once every acknowledged FaceId is searchable and listed, and the
server exits cleanly (status 0, each worker closed its store, no process left behind).

Which worker answered is read from the processes' CPU time (psutil): each request opens a new
connection (a new client), so the kernel hands the connections to both workers' accept()."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psutil

from support.images import encode

THREADS = 6
PER_THREAD = 4


def worker_processes(server) -> list[psutil.Process]:
    """The uvicorn workers: the supervisor's children that run Python (not its resource tracker)."""
    children = psutil.Process(server.process.pid).children()
    return [p for p in children if "resource_tracker" not in " ".join(p.cmdline())]


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def test_two_workers_on_postgresql_serve_concurrent_clients_and_stop_cleanly(
        start_faceaudit_server, postgres_database, tmp_path, astronaut_rgb):
    server = start_faceaudit_server(tmp_path / "data", extra_args=(
        "--database", postgres_database(), "--workers", "2", "--threads", "2"))
    workers = worker_processes(server)
    assert len(workers) == 2
    server.client().create_collection(CollectionId="busy")
    photos = [encode(astronaut_rgb, quality=50 + i) for i in range(THREADS * PER_THREAD)]
    cpu_before = [cpu_seconds(p) for p in workers]
    acknowledged: list[str] = []
    lock = threading.Lock()

    def index(share):
        for photo in share:
            client = server.client()  # a new connection each time
            records = client.index_faces(CollectionId="busy", Image={"Bytes": photo}, MaxFaces=1,
                                         QualityFilter="NONE")["FaceRecords"]
            with lock:
                acknowledged.extend(r["Face"]["FaceId"] for r in records)

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(index, photos[i::THREADS]) for i in range(THREADS)]:
            future.result(timeout=600)
    used = [cpu_seconds(p) - before for p, before in zip(workers, cpu_before)]
    # An IndexFaces is tens of milliseconds of detection and embedding: both did several.
    assert min(used) > 0.2, used

    assert len(acknowledged) == len(photos) == len(set(acknowledged))
    for _ in range(4):  # through either worker
        client = server.client()
        found = client.search_faces_by_image(CollectionId="busy", Image={"Bytes": photos[0]},
                                             FaceMatchThreshold=0, MaxFaces=4096)["FaceMatches"]
        assert {m["Face"]["FaceId"] for m in found} == set(acknowledged)
    assert server.client().describe_collection(CollectionId="busy")["FaceCount"] == len(photos)

    assert server.stop() == 0
    assert server.log().count("faceaudit: stopped") == 2  # each worker closed its store and pool
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)
