"""The three protocols give exactly the same per-group numbers against the local engine and
against faceaudit's own server reached through the Rekognition target (same engine)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from faceaudit.audit import protocols
from faceaudit.audit.targets import open_target
from faceaudit.datasets.readers import load_dataset
from support.server import start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_faces_dev(faces_dev_root):
    """16 LFW people (all their photos) and 8 UTKFace images of each gender x race cell."""
    dataset = load_dataset(faces_dev_root)
    people = sorted({image.identity for image in dataset.images if image.identity})[:16]
    per_cell: dict[tuple, int] = {}
    chosen = []
    for image in dataset.images:
        if image.identity in people:
            chosen.append(image)
        elif image.identity is None:
            cell = (image.gender, image.race)
            if per_cell.get(cell, 0) < 8:
                per_cell[cell] = per_cell.get(cell, 0) + 1
                chosen.append(image)
    return replace(dataset, images=chosen, pairs=None)


@pytest.fixture(scope="module")
def targets(tmp_path_factory, monkeypatch_module):
    data_dir = tmp_path_factory.mktemp("agree-server")
    with start_server(data_dir / "data") as server:
        monkeypatch_module.setenv("FACEAUDIT_ACCESS_KEY_ID", server.access_key_id)
        monkeypatch_module.setenv("FACEAUDIT_SECRET_ACCESS_KEY", server.secret_access_key)
        host_port = server.endpoint_url.removeprefix("http://")
        local = open_target("local", cache=False, progress=False)
        remote = open_target(f"rekognition://{host_port}", cache=False, progress=False)
        yield local, remote
        local.close()
        remote.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.parametrize("protocol", ["attributes", "verification", "lineup"])
def test_per_group_numbers_agree_exactly(protocol, small_faces_dev, targets):
    run = {"attributes": protocols.run_attributes, "verification": protocols.run_verification,
           "lineup": protocols.run_lineup}[protocol]
    local, remote = targets
    options = {"group_by": ("gender", "race"), "seed": 0, "min_cell": 5}
    from_local = run(small_faces_dev, local, **options)
    from_server = run(small_faces_dev, remote, **options)
    assert from_local["metrics"], "the protocol measured nothing"
    assert from_local["metrics"] == from_server["metrics"]
    assert from_local["gaps"] == from_server["gaps"]
