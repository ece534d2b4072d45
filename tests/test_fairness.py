"""Fair score normalization on constructed embeddings where the right answer is known."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from faceaudit.engine.base import FaceEngine
from faceaudit.fairness import FairScoreNormalization
from faceaudit.fairness.score_normalization import impostor_mask
from faceaudit.rekognition.collections import nearest_faces
from faceaudit.rekognition.service import RekognitionService
from faceaudit.rekognition.users import nearest_users
from faceaudit.scoring import Scoring
from faceaudit.similarity import SimilarityScale
from faceaudit.storage import EmbeddedStore, StoredFace
from faceaudit.vectors import pairwise_distances


def two_populations(seed: int, n: int = 300, dim: int = 16):
    """Two kinds of face, far apart: in one, strangers sit close together (the model confuses
    them); in the other, far apart. No labels are given to the normalization."""
    rng = np.random.default_rng(seed)
    centre_a, centre_b = np.zeros(dim), np.zeros(dim)
    centre_a[0], centre_b[0] = 5.0, -5.0
    tight = centre_a + rng.normal(0, 0.10, (n, dim))
    loose = centre_b + rng.normal(0, 0.25, (n, dim))
    return tight, loose


def within_fmr(embeddings, threshold, normalization=None):
    d = pairwise_distances(embeddings) if normalization is None else normalization.distances(embeddings, embeddings)
    mask = impostor_mask(len(embeddings))
    return float((d[mask] <= threshold).mean())


def test_normalization_equalises_false_match_rates_between_unlabelled_populations():
    tight, loose = two_populations(0)
    fsn = FairScoreNormalization.fit(np.vstack([tight, loose]), n_clusters=2, target_fmr=0.01, seed=0)
    # The tight population's cluster gets the negative offset (its strangers look alike).
    assert fsn.delta(tight[:1])[0] < 0 < fsn.delta(loose[:1])[0]

    test_tight, test_loose = two_populations(1)  # fresh faces of the same two kinds
    threshold = fsn.global_threshold
    before = (within_fmr(test_tight, threshold), within_fmr(test_loose, threshold))
    after = (within_fmr(test_tight, threshold, fsn), within_fmr(test_loose, threshold, fsn))
    # Raw: at the global threshold (1% of all impostor pairs, most of them across the two
    # kinds) the tight population's strangers match 4x the target, the loose one's never.
    assert before[0] > 0.03 and before[1] == 0.0
    # Normalized: each population's strangers match at about the target rate.
    assert 0.005 < after[0] < 0.02 and 0.005 < after[1] < 0.02


def test_cross_population_distances_shift_by_the_mean_offset():
    tight, loose = two_populations(2, n=50)
    fsn = FairScoreNormalization.fit(np.vstack([tight, loose]), n_clusters=2, target_fmr=0.05, seed=0)
    raw = pairwise_distances(tight[:3], loose[:4])
    expected = raw - 0.5 * (fsn.delta(tight[:3])[:, None] + fsn.delta(loose[:4])[None, :])
    assert np.allclose(fsn.distances(tight[:3], loose[:4]), expected)
    assert np.allclose(fsn.distances(loose[:4], tight[:3]), expected.T)  # symmetric


def test_one_cluster_changes_nothing_and_small_clusters_keep_offset_zero():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 8))
    single = FairScoreNormalization.fit(x, n_clusters=1, target_fmr=0.05, seed=0)
    assert single.offsets.tolist() == [pytest.approx(0.0)]
    assert np.allclose(single.distances(x[:5], x[5:9]), pairwise_distances(x[:5], x[5:9]))
    many = FairScoreNormalization.fit(x, n_clusters=10, target_fmr=0.01, seed=0)  # ~6 faces a cluster
    assert np.all(many.offsets == 0.0)  # too few pairs to estimate a 1% threshold anywhere


def test_identities_keep_genuine_pairs_out_of_the_impostor_set():
    mask = impostor_mask(4, ["ann", "ann", "bob", "cy"])
    assert not mask[0, 1] and mask[0, 2] and mask[2, 3] and not mask[1, 0]


def test_save_and_load_round_trip(tmp_path):
    tight, loose = two_populations(4, n=80)
    fsn = FairScoreNormalization.fit(np.vstack([tight, loose]), n_clusters=2, target_fmr=0.05, seed=0,
                                     provenance={"data": "constructed"})
    fsn.save(tmp_path / "fsn.json")
    loaded = FairScoreNormalization.load(tmp_path / "fsn.json")
    assert np.allclose(loaded.distances(tight[:5], loose[:5]), fsn.distances(tight[:5], loose[:5]))
    assert loaded.provenance["data"] == "constructed"
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError):
        FairScoreNormalization.load(tmp_path / "other.json")


def test_balanced_indices_take_the_same_number_from_every_group():
    from faceaudit.fairness.attribute_head import balanced_indices
    groups = [("a",)] * 50 + [("b",)] * 10 + [("c",)] * 30
    kept = balanced_indices(groups, seed=0)
    assert sorted(groups[i][0] for i in kept) == ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    assert np.array_equal(kept, balanced_indices(groups, seed=0))  # deterministic


def test_attribute_head_learns_a_label_and_balancing_helps_the_small_group():
    """A label carried by one direction for the majority group and by another for a minority,
    whose first direction even points the other way: trained on everyone, the head serves
    the majority; balanced, it serves both."""
    from faceaudit.fairness.attribute_head import AttributeHead
    rng = np.random.default_rng(5)

    def people(n, axis, group):
        x = rng.normal(0, 1, (n, 6))
        labels = np.where(x[:, axis] > 0, "male", "female")
        x[:, axis] += np.where(labels == "male", 1.5, -1.5)
        if axis == 1:
            x[:, 0] -= np.where(labels == "male", 1.0, -1.0)
        return x, list(labels), [(group,)] * n

    xa, ya, ga = people(950, 0, "majority")
    xb, yb, gb = people(50, 1, "minority")
    x, y, g = np.vstack([xa, xb]), ya + yb, ga + gb
    plain = AttributeHead.fit(x, y)
    balanced = AttributeHead.fit(x, y, balance_by=g)
    tb, tyb, _ = people(500, 1, "minority")

    def accuracy(head, x, y):
        return np.mean([label == truth for (label, _), truth in zip(head.predict(x), y)])

    assert set(plain.classes) == {"female", "male"}
    assert accuracy(balanced, tb, tyb) > accuracy(plain, tb, tyb) + 0.05
    assert accuracy(balanced, tb, tyb) > 0.75


def test_attribute_head_round_trip(tmp_path):
    from faceaudit.fairness.attribute_head import AttributeHead
    rng = np.random.default_rng(6)
    x = rng.normal(size=(40, 4))
    y = ["female" if v < 0 else "male" for v in x[:, 0]]
    head = AttributeHead.fit(x, y, provenance={"data": "constructed"})
    head.save(tmp_path / "head.json")
    loaded = AttributeHead.load(tmp_path / "head.json")
    assert loaded.predict(x[:5]) == head.predict(x[:5])
    probabilities = loaded.probabilities(x)
    assert np.allclose(probabilities.sum(1), 1.0)


class VectorsOnly(FaceEngine):
    """The engine's side of a search (model version, scale) without any model."""

    model_version = "1.0"
    similarity_scale = SimilarityScale(((0.0, 100.0), (2.0, 0.0)), "1.0")
    detect = embed = analyze = None  # type: ignore[assignment]


def _box() -> dict[str, float]:
    return {"Width": 1.0, "Height": 1.0, "Left": 0.0, "Top": 0.0}


@pytest.fixture
def normalized_collection(tmp_path):
    """A real embedded store holding the two populations, a normalization fit on them, and a
    Scoring with it: (store, collection, faces, vectors, scoring)."""
    tight, loose = two_populations(7, n=60)
    fsn = FairScoreNormalization.fit(np.vstack([tight, loose]), n_clusters=2, target_fmr=0.05, seed=0)
    store = EmbeddedStore(tmp_path / "data", synchronous="NORMAL")
    store.create_collection("c", "1.0")
    vectors = np.vstack([tight, loose]).astype(np.float32)
    faces = [StoredFace(str(uuid.uuid4()), str(uuid.uuid4()), None, _box(), 99.0, "1.0", None, v) for v in vectors]
    store.add_faces("c", faces)
    yield store, store.describe_collection("c"), faces, vectors, Scoring.for_engine(VectorsOnly(), fsn)
    store.close()


def test_face_search_ranks_and_cuts_by_normalized_distance(normalized_collection):
    """SearchFaces with a normalization: exactly the faces, order and cut a brute-force
    computation of the normalized distances gives (on a real embedded store)."""
    store, collection, faces, vectors, scoring = normalized_collection
    fsn = scoring.normalization
    query = vectors[0].astype(np.float64) + 0.01
    expected = fsn.distances(query, vectors.astype(np.float64))[0]
    for limit, max_distance in ((5, None), (200, float(np.quantile(expected, 0.3))), (3, 0.5)):
        hits = nearest_faces(scoring, store, collection, query, limit, max_distance)
        order = [i for i in np.argsort(expected, kind="stable")
                 if max_distance is None or expected[i] <= max_distance][:limit]
        assert [face.face_id for face, _ in hits] == [faces[i].face_id for i in order]
        assert [d for _, d in hits] == pytest.approx([max(expected[i], 0.0) for i in order], abs=1e-5)


def _brute_force_users(scoring, vectors, owners, queries, max_distance, excluded=()):
    d = scoring.distances(queries, vectors.astype(np.float64)).min(0)
    best: dict[str, float] = {}
    for i, user in enumerate(owners):
        if user is not None and user not in excluded:
            best[user] = min(best.get(user, np.inf), float(d[i]))
    return sorted((v, u) for u, v in best.items() if max_distance is None or v <= max_distance)


def test_user_search_ranks_and_cuts_by_normalized_distance(normalized_collection):
    """SearchUsers(ByImage) with a normalization: the users, order and distances of a brute-force
    computation (a user's distance: its closest face to the closest query row)."""
    store, collection, faces, vectors, scoring = normalized_collection
    owners: list[str | None] = [None] * len(faces)
    for u in range(12):  # users of 1-5 faces drawn from both populations, some faces left without a user
        user = f"user-{u}"
        store.create_user("c", user)
        members = list(range(u, len(faces), 12))[: 1 + u % 5]
        store.associate_faces("c", user, [faces[i].face_id for i in members])
        for i in members:
            owners[i] = user
    collection = store.describe_collection("c")
    raw = Scoring(scoring.scale)
    query = vectors[3].astype(np.float64) + 0.02
    radius = float(np.quantile(scoring.distances(query, vectors)[0], 0.4))
    for queries, excluded in ((query, ()), (vectors[[0, 1, 2]], ("user-0",))):
        for limit, max_distance in ((4, None), (50, radius)):
            hits = nearest_users(scoring, store, collection, queries, limit, max_distance, exclude_user_ids=excluded)
            expected = _brute_force_users(scoring, vectors, owners, np.atleast_2d(queries), max_distance,
                                          excluded)[:limit]
            assert [user.user_id for user, _ in hits] == [u for _, u in expected]
            assert [d for _, d in hits] == pytest.approx([d for d, _ in expected], abs=1e-5)
    # the normalization changes the answer here, so a path that ignored it would fail above
    raw_hits = nearest_users(raw, store, collection, query, 50, radius)
    normalized_hits = nearest_users(scoring, store, collection, query, 50, radius)
    assert [(u.user_id, round(d, 6)) for u, d in raw_hits] != [(u.user_id, round(d, 6)) for u, d in normalized_hits]


def test_search_users_operation_reports_normalized_similarity(normalized_collection):
    """Through RekognitionService: SearchUsers' Similarity is the scoring's similarity of the
    normalized distance, not of the raw one."""
    store, _, faces, vectors, scoring = normalized_collection
    service = RekognitionService(VectorsOnly(), store, scoring=scoring)
    for user, members in (("near", [1, 2]), ("far", [70, 71])):
        service.call("CreateUser", {"CollectionId": "c", "UserId": user})
        service.call("AssociateFaces", {"CollectionId": "c", "UserId": user,
                                        "FaceIds": [faces[i].face_id for i in members]})
    response = service.call("SearchUsers", {"CollectionId": "c", "FaceId": faces[0].face_id,
                                            "UserMatchThreshold": 0})
    expected = _brute_force_users(scoring, vectors, [None, "near", "near"] + [None] * 67 + ["far", "far"]
                                  + [None] * (len(faces) - 72), vectors[[0]], None)
    assert [m["User"]["UserId"] for m in response["UserMatches"]] == [u for _, u in expected]
    assert [m["Similarity"] for m in response["UserMatches"]] == pytest.approx(
        [scoring.similarity(d) for d, _ in expected], abs=1e-4)
    raw_similarity = Scoring(scoring.scale).similarities(vectors[0], vectors[[1, 2]]).max()
    assert response["UserMatches"][0]["User"]["UserId"] == "near"
    assert response["UserMatches"][0]["Similarity"] != pytest.approx(raw_similarity, abs=1e-3)


def test_associate_faces_threshold_uses_normalized_distance(normalized_collection):
    """AssociateFaces' UserMatchThreshold: a face joins exactly when its normalized distance to the
    user's faces is within the threshold's distance; the refusal's Confidence is that similarity."""
    store, _, faces, vectors, scoring = normalized_collection
    service = RekognitionService(VectorsOnly(), store, scoring=scoring)
    service.call("CreateUser", {"CollectionId": "c", "UserId": "u"})
    service.call("AssociateFaces", {"CollectionId": "c", "UserId": "u", "FaceIds": [faces[0].face_id]})
    candidates = list(range(1, len(faces)))
    normalized = scoring.distances(vectors[[0]], vectors[candidates])[0]
    raw = Scoring(scoring.scale).distances(vectors[[0]], vectors[candidates])[0]
    # a threshold at which raw and normalized distances disagree for some faces (face 0's own population)
    threshold = scoring.similarity(float(np.median(raw[:59])) + 0.03)
    cut = scoring.max_distance(threshold)
    assert np.any((normalized <= cut) != (raw <= cut))
    decided = {}
    for i in candidates:  # one at a time, released again: each is measured against face 0 alone
        decided[i] = service.call("AssociateFaces", {"CollectionId": "c", "UserId": "u",
                                                     "FaceIds": [faces[i].face_id], "UserMatchThreshold": threshold})
        if decided[i]["AssociatedFaces"]:
            service.call("DisassociateFaces", {"CollectionId": "c", "UserId": "u", "FaceIds": [faces[i].face_id]})
    for k, i in enumerate(candidates):
        response = decided[i]
        if normalized[k] <= cut:
            assert response["AssociatedFaces"] == [{"FaceId": faces[i].face_id}]
        else:
            [failure] = response["UnsuccessfulFaceAssociations"]
            assert failure["Reasons"] == ["LOW_MATCH_CONFIDENCE"]
            assert failure["Confidence"] == pytest.approx(scoring.similarity(float(normalized[k])), abs=1e-4)


def test_the_environment_names_the_normalization_every_operation_uses(tmp_path, normalized_collection):
    """FACEAUDIT_SCORE_NORMALIZATION (through Settings) reaches the service's one Scoring; the
    Scoring is made once per engine and file, and a service without it compares raw distances."""
    from faceaudit.runtime import default_scoring
    from faceaudit.settings import SCORE_NORMALIZATION_ENV, Settings

    store, _, _, _, scoring = normalized_collection
    path = tmp_path / "fsn.json"
    scoring.normalization.save(path)
    engine = VectorsOnly()
    settings = Settings.from_env({SCORE_NORMALIZATION_ENV: str(path)})
    service = RekognitionService(engine, store, settings=settings)
    assert service.scoring.normalization is not None
    assert np.array_equal(service.scoring.normalization.offsets, scoring.normalization.offsets)
    assert default_scoring(engine, settings) is service.scoring  # one per engine
    plain = default_scoring(engine, Settings.from_env({}))
    assert plain.normalization is None and plain.scale is engine.similarity_scale


@pytest.mark.parametrize("trained_on, refused", [("other", True), ("own", False), (None, False)])
def test_a_normalization_is_refused_by_an_engine_it_was_not_trained_for(engine, tmp_path, trained_on, refused):
    """Score normalizations record the engine whose embeddings they were fit on; serving one with
    another engine would shift distances by offsets measured in a different space."""
    from faceaudit.runtime import default_scoring, engine_for_model_version
    from faceaudit.settings import Settings

    spec = engine_for_model_version(engine.model_version)
    assert spec is not None
    own, other = spec.name, "dlib" if spec.name == "sface" else "sface"
    trained_on = {"own": own, "other": other}.get(trained_on) if trained_on else None
    tight, loose = two_populations(3, n=30)
    provenance = {} if trained_on is None else {"engine": trained_on}
    fsn = FairScoreNormalization.fit(np.vstack([tight, loose]), n_clusters=2, target_fmr=0.05, seed=0,
                                     provenance=provenance)
    path = tmp_path / "fsn.json"
    fsn.save(path)
    settings = Settings(score_normalization=str(path))
    if refused:
        with pytest.raises(ValueError, match=f"trained on the {other} engine's embeddings; this engine is {own}"):
            default_scoring(engine, settings)
    else:
        assert default_scoring(engine, settings).normalized


def test_training_records_the_engine_and_keeps_embeddings_apart_per_engine(monkeypatch):
    """One process training for two engines (FACEAUDIT_ENGINE changed between) must embed the
    images again for the second: reusing the first engine's vectors would train on the wrong space.
    The engine run is replaced by one whose vectors say which engine made them."""
    from faceaudit.datasets.labelled import AuditDataset, AuditImage
    from faceaudit.engine.batch import FileResult
    from faceaudit.fairness import train
    from faceaudit.settings import Settings

    calls: list[str] = []
    tight, loose = two_populations(5, n=20)
    vectors = np.vstack([tight, loose])

    def fake_analyze(paths, **_):
        engine = Settings.from_env().engine
        calls.append(engine)
        shift = 0.0 if engine == "dlib" else 1.0
        return [FileResult(path=p, face_count=1, embedding=vectors[int(p.rsplit("-", 1)[1])] + shift) for p in paths]

    monkeypatch.setattr(train, "analyze_files", fake_analyze)
    monkeypatch.setattr(train, "_embedded", {})
    dataset = AuditDataset("synthetic", "/nowhere", [AuditImage(f"/nowhere/img-{i}") for i in range(len(vectors))])
    monkeypatch.setenv("FACEAUDIT_ENGINE", "dlib")
    _, dlib_vectors = train.embeddings_of(dataset.images)
    dlib_fsn = train.train_score_normalization(dataset, clusters=2, target_fmr=0.05)
    monkeypatch.setenv("FACEAUDIT_ENGINE", "sface")
    _, sface_vectors = train.embeddings_of(dataset.images)
    sface_fsn = train.train_score_normalization(dataset, clusters=2, target_fmr=0.05)
    assert calls == ["dlib", "sface"]  # once per engine: the second engine did not reuse the first's
    np.testing.assert_allclose(sface_vectors - dlib_vectors, 1.0)
    assert (dlib_fsn.provenance["engine"], sface_fsn.provenance["engine"]) == ("dlib", "sface")
