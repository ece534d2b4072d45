"""Targets that speak Rekognition: faceaudit's engine in-process, or any endpoint through botocore.

One class, :class:`RekognitionTarget`, asks every question through a
Rekognition-like ``call(operation, request) -> response`` (Python shapes, as
boto3 passes and returns them), so the local target and a rekognition target
pointed at faceaudit's own server run the very same code and give the very same
numbers. Only how ``call`` is reached differs (a :class:`Backend`):

* :class:`~faceaudit.audit.targets.local.LocalBackend` (local.py) -- faceaudit's
  engine in a pool of worker processes (default: one per core);
* :class:`~faceaudit.audit.targets.transport.ThreadBackend` (transport.py) -- a
  thread pool of botocore clients, for an endpoint URL or Amazon's own endpoint.

Operations used (all exist on Amazon Rekognition): DetectFaces (Attributes ALL),
CreateCollection, DeleteCollection, IndexFaces (MaxFaces 1, QualityFilter NONE,
ExternalImageId ``i<n>``), SearchFaces and SearchFacesByImage (FaceMatchThreshold
0).

Errors: an image the target refuses for a reason of the image's own
(:data:`IMAGE_ERRORS`, e.g. InvalidImageFormatException) is an answer about that
image (``Detection(error=code)``, no similarity, no matches). Any other error
(bad credentials, throttling after botocore's retries, a server error) raises
:class:`TargetError`: an audit that silently counted those as "no face" would
be wrong, and the cache lets the rerun continue where this one stopped.

Resuming (runs.py names what is cached, cache.py stores it):

* DetectFaces responses are cached per (target fingerprint, image SHA-256,
  parameters): a rerun sends DetectFaces only for images not yet answered.
* similarities() and search() work on a *run*: the ordered list of distinct
  image contents (SHA-256) being indexed, under the target's fingerprint. The
  run's temporary collection (``faceaudit-audit-<uuid8>``), each image's
  IndexFaces outcome (its FaceId, or no face), each SearchFaces response
  (reduced to the similarities to that image's partners in the pairs: a full
  answer holds every face of the run) and each probe's SearchFacesByImage
  response (its matches) are cached under the run. Searches
  start only once the whole run is indexed, so a cached search response is
  final. A rerun therefore searches only what was not searched, and indexes
  only what is not yet in the collection -- when the collection still exists
  (CreateCollection answers ResourceAlreadyExistsException); if it is gone,
  everything is indexed again into a fresh one. A completed run answers from
  the cache alone, without calls.
* Collections are deleted when a run completes and by close(). A run
  *interrupted* (Ctrl-C, or a TargetError) keeps its collection when the cache
  is on disk (``keep_interrupted=True``), so that the rerun need not index
  again; it is deleted when that rerun completes. With an in-memory cache or
  ``keep_interrupted=False`` close() deletes it too.
* Faces are mapped back to images by ExternalImageId, never by FaceId, so a
  face indexed twice (the process died between the target's commit and the
  cache's) only repeats a match, which is counted once.

Similarities are read from SearchFaces with MaxFaces 4096 (Rekognition's
maximum): for a pair (a, b), a's response gives b's similarity (else b's
response a's). A partner outside the top 4096 -- only possible when the run
holds more than 4097 faces -- is reported as similarity 0.0: it is certainly
below every threshold that matters, since 4096 other faces scored higher.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, as_completed
from typing import Any, Self

from faceaudit.audit.targets.base import Detection, Match, Target
from faceaudit.audit.targets.cache import ResponseCache, file_sha256
from faceaudit.audit.targets.progress import progress_bar
from faceaudit.audit.targets.runs import (
    DETECT_REQUEST,
    INDEX_REQUEST,
    SEARCH_MAX_FACES,
    Run,
    detect_key,
    detection_from_response,
    search_matches,
    target_fingerprint,
)
from faceaudit.audit.targets.transport import (
    IMAGE_ERRORS,
    UNREADABLE,
    Backend,
    Job,
    Outcome,
    TargetError,
)

COLLECTION_PREFIX = "faceaudit-audit-"


def _indexed(status: dict[str, Any] | None) -> dict[str, Any]:
    """An image's IndexFaces status once _index has run (it records every image)."""
    if status is None:
        raise RuntimeError("an image of the run was not indexed")
    return status


class RekognitionTarget(Target):
    """A Target over a Backend (see the module docstring)."""

    def __init__(self, backend: Backend, *, name: str | None = None, cache: ResponseCache | None = None,
                 progress: bool = True, keep_interrupted: bool = True):
        self.backend = backend
        self.name = name or backend.endpoint
        self.cache = cache if cache is not None else ResponseCache(None)
        self.progress = progress
        self.keep_interrupted = keep_interrupted
        self.calls: Counter = Counter()  # operations sent to the target
        self.cache_hits: Counter = Counter()
        self._model_version: str | None = None
        self._collections: set[str] = set()  # created or reused, not yet deleted
        self._parked: set[str] = set()  # kept for a rerun of an interrupted run
        self._closed = False

    # -- identity ---------------------------------------------------------------------
    @property
    def model_version(self) -> str:
        """The target's FaceModelVersion, read from CreateCollection on a probe collection."""
        if self._model_version is None:
            collection_id = self._new_collection_id()
            response = self._admin("CreateCollection", {"CollectionId": collection_id})
            try:
                self._model_version = str(response.get("FaceModelVersion") or "unknown")
            finally:
                self._delete_collection(collection_id)
        return self._model_version

    @property
    def fingerprint(self) -> str:
        """What cached search answers are valid for: the endpoint (with its scoring options) and
        its model version."""
        return target_fingerprint(self.backend.kind, self.backend.endpoint, self.model_version)

    @property
    def engine_fingerprint(self) -> str:
        """What cached detections and indexed faces are valid for: the same less the scoring
        options (a local score normalization), so that changing only those reuses them."""
        return target_fingerprint(self.backend.kind, self.backend.engine_endpoint, self.model_version)

    def describe(self) -> dict:
        return {
            "kind": self.backend.kind, "name": self.name, "endpoint": self.backend.endpoint,
            "model_version": self.model_version, "workers": self.backend.workers,
            "parallelism": "processes" if self.backend.kind == "local" else "threads",
            "search_mode": getattr(self.backend, "search_mode", None) or "not known (the service's own)",
            "cache_dir": None if self.cache.directory is None else str(self.cache.directory),
            "calls": dict(sorted(self.calls.items())), "cache_hits": dict(sorted(self.cache_hits.items())),
        }

    # -- calls ------------------------------------------------------------------------
    def _admin(self, operation: str, request: dict, *, allow: tuple[str, ...] = ()) -> dict:
        """One call that must succeed (or fail with a code in ``allow``: returns {"Error": ...})."""
        self.calls[operation] += 1
        outcome = self.backend.run(Job(operation, request))
        if outcome[0] == "ok":
            return outcome[1]
        if outcome[1] in allow:
            return {"Error": {"Code": outcome[1], "Message": outcome[2]}}
        raise TargetError(outcome[1], outcome[2], operation)

    def _run_jobs(self, jobs: list[Job], description: str, done: Callable[[int, Outcome], None]) -> None:
        """Run jobs in parallel; ``done(i, outcome)`` in this thread as each finishes."""
        if not jobs:
            return
        for job in jobs:
            self.calls[job.operation] += 1
        futures: dict[Future, int] = {}
        try:
            for i, job in enumerate(jobs):
                futures[self.backend.submit(job)] = i
            with progress_bar(self.progress, description, len(jobs)) as advance:
                for future in as_completed(futures):
                    # Forget each future once read: a finished one holds its whole response
                    # (a SearchFaces answer lists up to 4096 faces), and keeping them all held
                    # pairs x faces of them at once -- about 10 GB for 3,000 images.
                    done(futures.pop(future), future.result())
                    advance()
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    @staticmethod
    def _answer(outcome: Outcome, operation: str) -> tuple[dict, bool]:
        """(value, cacheable): the response, or {"Error": ...} for an image error; raises otherwise."""
        if outcome[0] == "ok":
            return outcome[1], True
        code, message = outcome[1], outcome[2]
        if code in IMAGE_ERRORS:
            return {"Error": {"Code": code, "Message": message}}, code != UNREADABLE
        raise TargetError(code, message, operation)

    # -- detect -----------------------------------------------------------------------
    def detect(self, paths: Sequence[str]) -> dict[str, Detection]:
        paths = list(dict.fromkeys(str(p) for p in paths))
        fingerprint = self.engine_fingerprint
        results: dict[str, Detection] = {}
        pending: list[tuple[str, str]] = []
        for path in paths:
            try:
                sha = file_sha256(path)
            except OSError:
                results[path] = Detection(face_count=0, error=UNREADABLE)
                continue
            key = detect_key(fingerprint, sha)
            cached = self.cache.get(key)
            if cached is not None:
                self.cache_hits["DetectFaces"] += 1
                results[path] = detection_from_response(cached)
            else:
                pending.append((path, key))

        def done(i: int, outcome: Outcome) -> None:
            path, key = pending[i]
            value, cacheable = self._answer(outcome, "DetectFaces")
            if cacheable:
                self.cache.put(key, "DetectFaces", value)
            results[path] = detection_from_response(value)

        jobs = [Job("DetectFaces", dict(DETECT_REQUEST), path) for path, _ in pending]
        self._run_jobs(jobs, f"DetectFaces on {len(jobs)} images ({self.name})", done)
        return {path: results[path] for path in paths}

    # -- collections and runs ----------------------------------------------------------
    @staticmethod
    def _new_collection_id() -> str:
        return COLLECTION_PREFIX + uuid.uuid4().hex[:8]

    def _delete_collection(self, collection_id: str) -> None:
        self._admin("DeleteCollection", {"CollectionId": collection_id}, allow=("ResourceNotFoundException",))
        self._collections.discard(collection_id)
        self._parked.discard(collection_id)

    def _collection_for(self, run: Run) -> tuple[str, str]:
        """(collection id, generation) of the run: the collection recorded for it if it still
        exists, else a new one. The generation changes whenever the collection is (re)created
        empty, so that IndexFaces outcomes recorded for an earlier one are not trusted."""
        recorded = self.cache.get(run.collection_key())
        if recorded is not None:
            collection_id = recorded["CollectionId"]
            answer = self._admin("CreateCollection", {"CollectionId": collection_id},
                                 allow=("ResourceAlreadyExistsException",))
            generation = recorded["Generation"] if "Error" in answer else uuid.uuid4().hex
        else:
            collection_id, generation = self._new_collection_id(), uuid.uuid4().hex
            self._admin("CreateCollection", {"CollectionId": collection_id})
        self.cache.put(run.collection_key(), "collection", {"CollectionId": collection_id, "Generation": generation})
        self._collections.add(collection_id)
        return collection_id, generation

    @property
    def _keeps_collections(self) -> bool:
        """The local engine's own store, on disk beside the cache: its collections hold the
        embeddings of every image indexed, kept so that a later audit changing only a scoring
        option (score normalization) searches them again instead of indexing every image anew."""
        return (self.cache.persistent and self.backend.kind == "local"
                and bool(getattr(self.backend, "persistent_store", False)))

    def _finish(self, run: Run) -> None:
        """Delete the run's collection (if one is recorded) and forget it; the local engine's
        persistent store keeps it (see _keeps_collections)."""
        recorded = self.cache.get(run.collection_key())
        if recorded is not None and self._keeps_collections:
            self._parked.add(recorded["CollectionId"])
        elif recorded is not None:
            self._delete_collection(recorded["CollectionId"])
            self.cache.delete(run.collection_key())

    def _interrupted(self, collection_id: str | None) -> None:
        resumable = self.cache.persistent and (self.backend.kind != "local"
                                               or getattr(self.backend, "persistent_store", False))
        if collection_id is not None and self.keep_interrupted and resumable:
            self._parked.add(collection_id)

    def _statuses(self, run: Run) -> list[dict | None]:
        """Each image's IndexFaces outcome in this run, as cached:
        {"CollectionId", "Generation", "FaceIds", "Error"}."""
        statuses: list[dict | None] = []
        for i, sha in enumerate(run.shas):
            if sha is None:
                statuses.append({"CollectionId": None, "Generation": None, "FaceIds": [], "Error": UNREADABLE})
            else:
                statuses.append(self.cache.get(run.index_key(i)))
        return statuses

    def _index(self, run: Run, statuses: list[dict | None], collection: tuple[str, str], what: str) -> None:
        """IndexFaces every image not known to be in the collection (updates ``statuses``)."""
        collection_id, generation = collection
        todo = [i for i, status in enumerate(statuses)
                if status is None or (status["FaceIds"] and status.get("Generation") != generation)]
        self.cache_hits["IndexFaces"] += len(run.paths) - len(todo)

        def done(n: int, outcome: Outcome) -> None:
            i = todo[n]
            value, cacheable = self._answer(outcome, "IndexFaces")
            face_ids = [record["Face"]["FaceId"] for record in value.get("FaceRecords", [])]
            status = {"CollectionId": collection_id, "Generation": generation, "FaceIds": face_ids,
                      "Error": value["Error"]["Code"] if "Error" in value else None}
            if cacheable:
                self.cache.put(run.index_key(i), "IndexFaces", status)
            statuses[i] = status

        jobs = [Job("IndexFaces", {"CollectionId": collection_id, "ExternalImageId": run.external_id(i),
                                   **INDEX_REQUEST}, run.paths[i]) for i in todo]
        self._run_jobs(jobs, f"IndexFaces: {len(jobs)} {what} images into {collection_id} ({self.name})", done)

    # -- similarities -------------------------------------------------------------------
    def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        pairs = [(str(a), str(b)) for a, b in pairs]
        run = Run(self.engine_fingerprint, "similarities", [p for pair in pairs for p in pair],
                  scoring=self.fingerprint)
        # Each path_a is searched; of its answer only the similarities to its partners are kept.
        partners: dict[int, list[int]] = {}
        for a, b in pairs:
            partners.setdefault(run.position[a], []).append(run.position[b])
        partners = {i: sorted(set(js)) for i, js in partners.items()}
        searched = list(partners)
        statuses = self._statuses(run)
        responses: dict[int, dict[int, float]] = {}  # searched image -> {partner: similarity}
        for i in searched:
            cached = self.cache.get(run.search_key(i, partners[i]))
            if cached is not None:
                responses[i] = dict(cached["Similarities"])
        self.cache_hits["SearchFaces"] += len(responses)

        def unsearched() -> list[int]:
            return [i for i in searched
                    if i not in responses and ((status := statuses[i]) is None or status["FaceIds"])]

        if any(status is None for status in statuses) or unsearched():
            collection_id = None
            try:
                collection = self._collection_for(run)
                collection_id = collection[0]
                self._index(run, statuses, collection, "pair")
                todo = unsearched()

                def done(n: int, outcome: Outcome) -> None:
                    if outcome[0] != "ok":
                        raise TargetError(outcome[1], outcome[2], "SearchFaces")
                    i = todo[n]
                    wanted, found = set(partners[i]), dict[int, float]()
                    for external_id, similarity in search_matches(outcome[1]):
                        j = run.index_of(external_id)
                        # a face indexed twice (see the module docstring) is one match
                        if j in wanted and j != i and similarity > found.get(j, -1.0):
                            found[j] = similarity
                    self.cache.put(run.search_key(i, partners[i]), "SearchFaces",
                                   {"Similarities": sorted(found.items())})
                    responses[i] = found

                jobs = [Job("SearchFaces", {"CollectionId": collection_id,
                                            "FaceId": _indexed(statuses[i])["FaceIds"][0],
                                            "FaceMatchThreshold": 0.0, "MaxFaces": SEARCH_MAX_FACES})
                        for i in todo]
                self._run_jobs(jobs, f"SearchFaces for {len(jobs)} images ({self.name})", done)
            except BaseException:
                self._interrupted(collection_id)
                raise
        self._finish(run)  # also removes a collection left by an interrupted earlier run

        results: list[float | None] = []
        for a, b in pairs:
            i, j = run.position[a], run.position[b]
            if not _indexed(statuses[i])["FaceIds"] or not _indexed(statuses[j])["FaceIds"]:
                results.append(None)
            elif i == j:
                results.append(100.0)
            else:
                value = responses[i].get(j)
                if value is None and j in responses:
                    value = responses[j].get(i)
                results.append(0.0 if value is None else value)  # outside the top 4096: see docstring
        return results

    # -- search -------------------------------------------------------------------------
    def search(self, gallery: Sequence[str], probes: Sequence[str], max_results: int = 50
               ) -> dict[str, list[Match]]:
        if not 1 <= max_results <= SEARCH_MAX_FACES:
            raise ValueError(f"max_results must be between 1 and {SEARCH_MAX_FACES}")
        run = Run(self.engine_fingerprint, "search", [str(p) for p in gallery], scoring=self.fingerprint)
        probes = list(dict.fromkeys(str(p) for p in probes))
        answers: dict[str, dict] = {}
        pending: list[tuple[str, str]] = []
        for probe in probes:
            try:
                sha = file_sha256(probe)
            except OSError:
                answers[probe] = {"Error": {"Code": UNREADABLE}}
                continue
            key = run.probe_key(sha, max_results)
            cached = self.cache.get(key)
            if cached is not None:
                self.cache_hits["SearchFacesByImage"] += 1
                answers[probe] = cached
            else:
                pending.append((probe, key))

        if pending:
            collection_id = None
            try:
                collection = self._collection_for(run)
                collection_id = collection[0]
                self._index(run, self._statuses(run), collection, "gallery")

                def done(n: int, outcome: Outcome) -> None:
                    probe, key = pending[n]
                    value, cacheable = self._answer(outcome, "SearchFacesByImage")
                    if "Error" not in value:
                        value = {"Matches": search_matches(value)}
                    if cacheable:
                        self.cache.put(key, "SearchFacesByImage", value)
                    answers[probe] = value

                jobs = [Job("SearchFacesByImage", {"CollectionId": collection_id, "FaceMatchThreshold": 0.0,
                                                   "MaxFaces": max_results, "QualityFilter": "NONE"}, probe)
                        for probe, _ in pending]
                self._run_jobs(jobs, f"SearchFacesByImage for {len(jobs)} probes ({self.name})", done)
            except BaseException:
                self._interrupted(collection_id)
                raise
        self._finish(run)

        results: dict[str, list[Match]] = {}
        for probe in probes:
            matches: list[Match] = []
            seen: set[int] = set()
            for external_id, similarity in answers[probe].get("Matches", []):
                j = run.index_of(external_id)
                if j is None or j in seen or j >= len(run.paths):
                    continue
                seen.add(j)
                matches.append(Match(path=run.paths[j], similarity=similarity))
            matches.sort(key=lambda m: -m.similarity)  # stable: the target's order among equals
            results[probe] = matches
        return results

    # -- close ----------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for collection_id in sorted(self._collections - self._parked):
                with contextlib.suppress(Exception):  # best effort: the target may be what failed
                    self._delete_collection(collection_id)
        finally:
            self.backend.close()
            self.cache.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
