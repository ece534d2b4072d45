"""What a batch runs over: a folder's images or a CSV listing, with valid ExternalImageIds."""

from __future__ import annotations

import pytest

from faceaudit.batch.sources import external_id_for, list_sources
from faceaudit.errors import InvalidParameterException


def test_a_folder_lists_its_images_recursively_in_order(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/two photo.JPG", "a.png", "notes.txt", "b/c.webp"):
        (tmp_path / name).write_bytes(b"x")
    sources = list_sources(tmp_path)
    assert [s.path for s in sources] == [str(tmp_path / n) for n in ("a.png", "b/c.webp", "b/two photo.JPG")]
    assert [s.external_image_id for s in sources] == ["a.png", "b:c.webp", "b:two_photo.JPG"]


def test_a_csv_listing_resolves_relative_paths_and_keeps_given_ids(tmp_path):
    (tmp_path / "list.csv").write_text("path,external_image_id\nimgs/a.jpg,person-1\n/abs/b.jpg,\n")
    sources = list_sources(tmp_path / "list.csv")
    assert [(s.path, s.external_image_id) for s in sources] == [
        (str(tmp_path / "imgs" / "a.jpg"), "person-1"), ("/abs/b.jpg", ":abs:b.jpg")]


@pytest.mark.parametrize("text, message", [
    ("file\na.jpg\n", "needs a 'path' column"),
    ("path\n\n", None),  # a blank line is no row
    ("path,external_image_id\na.jpg,no spaces allowed\n", "not a valid ExternalImageId"),
    ("path\n ,\n", "empty path"),
])
def test_a_bad_listing_is_refused_with_the_line(tmp_path, text, message):
    (tmp_path / "list.csv").write_text(text)
    if message is None:
        assert list_sources(tmp_path / "list.csv") == []
        return
    with pytest.raises(InvalidParameterException, match=message):
        list_sources(tmp_path / "list.csv")


def test_neither_a_folder_nor_a_csv_is_refused(tmp_path):
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(InvalidParameterException, match="folder of images or a CSV"):
        list_sources(tmp_path / "x.txt")
    with pytest.raises(InvalidParameterException):
        list_sources(tmp_path / "missing")


def test_external_ids_fit_rekognitions_pattern_and_length():
    long = "d/" * 200 + "f.jpg"
    assert len(external_id_for(long)) == 255 and external_id_for(long).endswith("f.jpg")
    assert external_id_for("é/ü?.png") == "_:__.png"
