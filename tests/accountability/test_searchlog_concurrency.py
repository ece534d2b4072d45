"""Many threads and several processes appending to one data directory's search log: one chain.

On both databases (the ``database`` fixture); with PostgreSQL the processes have data
directories (and signing keys) of their own, as servers on several hosts do."""

from __future__ import annotations

import json
import multiprocessing
import threading

import pytest

from faceaudit.accountability.searchlog import SearchLog, SearchLogError, read_data_dir


def _append_many(data_dir: str, database: str | None, name: str, count: int) -> None:
    log = SearchLog(data_dir, database=database)
    threads = [threading.Thread(target=lambda t=t: [log.append({"kind": "request", "request_id": f"{name}-{t}-{i}"})
                                                    for i in range(count)]) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()


def test_threads_get_distinct_records_in_one_chain_and_each_returned_record_is_the_stored_one(tmp_path, database):
    log = SearchLog(tmp_path, database=database)
    returned: list[dict] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(30):
            stored = log.append({"kind": "request", "request_id": f"{n}-{i}"})
            with lock:
                returned.append(stored)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    contents = read_data_dir(tmp_path, database)
    assert contents.verify().ok
    on_disk = {r["seq"]: r for r in (json.loads(t) for t in contents.texts) if r["kind"] == "request"}
    assert sorted(r["seq"] for r in returned) == sorted(on_disk)  # every append got its own seq
    assert all(on_disk[r["seq"]] == r for r in returned)
    assert len({r["request_id"] for r in returned}) == 240


def test_processes_sharing_a_data_directory_write_one_chain(tmp_path, database):
    SearchLog(tmp_path, database=database).close()  # the log and its key exist before the writers start
    context = multiprocessing.get_context("spawn")
    homes = [tmp_path / f"host{n}" if database else tmp_path for n in range(3)]
    workers = [context.Process(target=_append_many, args=(str(homes[n]), database, f"p{n}", 20)) for n in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    contents = read_data_dir(tmp_path, database)
    verification = contents.verify()
    assert verification.ok, verification.problem
    if database:  # each host signed with its own key, and every key is listed
        assert len(contents.public_keys) == 4
        assert verification.checkpoints >= 3
    ids = [r["request_id"] for r in contents.records() if r["kind"] == "request"]
    assert len(ids) == len(set(ids)) == 3 * 4 * 20


def test_an_append_that_cannot_be_written_raises_and_nothing_is_half_stored(tmp_path, database):
    log = SearchLog(tmp_path, database=database)
    log.append({"kind": "request", "request_id": "kept"})
    log.close()
    with pytest.raises(SearchLogError, match="closed"):
        log.append({"kind": "request", "request_id": "lost"})
    assert [r["request_id"] for r in read_data_dir(tmp_path, database).records()] == ["kept"]
