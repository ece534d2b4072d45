"""Audit dataset readers: every layout on small synthetic folders, every problem kind
with exact counts, make_pairs, and the real faces-dev folder read in place.

The synthetic images are tiny blank pictures: readers never look at pixels.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from faceaudit.audit.pairs import make_pairs
from faceaudit.datasets import faces_dev
from faceaudit.datasets.labelled import AuditDataset, AuditImage, normalize_gender
from faceaudit.datasets.readers import (
    BAD_PAIRS_LINE,
    BAD_ROW,
    MALFORMED_NAME,
    PAIR_NOT_IN_SET,
    PAIRS_COUNT,
    UNUSED_LABEL,
    describe_problems,
    detect_layout,
    load_dataset,
    problem_kinds,
    read_lfw,
)
from faceaudit.errors import InvalidParameterException


def image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.name.lower().endswith((".jpg", ".jpeg")) else "PNG"
    Image.new("RGB", (4, 4), (120, 90, 60)).save(path, format=fmt)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def by_name(dataset: AuditDataset) -> dict[str, AuditImage]:
    return {os.path.relpath(i.path, dataset.root).replace(os.sep, "/"): i for i in dataset.images}


# --------------------------------------------------------------------------- csv


def test_csv_layout_parses_labels_groups_and_absolute_paths(tmp_path):
    root = tmp_path / "set"
    for name in ("a.png", "b.png", "sub/c.png", "d.png", "e.png"):
        image(root / name)
    elsewhere = image(tmp_path / "elsewhere" / "x.png")
    labels = write_csv(tmp_path / "labels.csv", ["Path", "identity", "Gender", "skin_type", "age", "camera"], [
        ["a.png", "p1", "F", "IV", "20-29", "webcam"],
        ["b.png", "p1", "Woman", "type 2", "34", ""],
        ["sub/c.png", "p2", "man", "lighter", "more than 70", "dslr"],
        ["d.png", "", "MALE", "6", "", "dslr"],
        ["e.png", "p3", "", "", "41.5", ""],
        [str(elsewhere), "p3", "m", "Fitzpatrick I", "60+", "phone"],
    ])
    dataset = load_dataset(root, labels=labels)
    assert detect_layout(root, labels) == "csv"
    assert not dataset.problems and dataset.pairs is None
    assert dataset.root == str(root.resolve()) and len(dataset.images) == 6
    assert all(os.path.isabs(i.path) and os.path.isfile(i.path) for i in dataset.images)
    images = by_name(dataset)
    a, b, c, d, e = (images[k] for k in ("a.png", "b.png", "sub/c.png", "d.png", "e.png"))
    x = next(i for i in dataset.images if i.path == str(elsewhere))
    assert (a.identity, a.gender, a.race, a.age) == ("p1", "female", "IV", 24.5)
    assert a.groups == {"camera": "webcam", "skin_type": "IV", "skin_group": "darker", "age_band_label": "20-29"}
    assert (b.gender, b.race, b.age, b.groups) == ("female", "II", 34.0, {"skin_type": "II", "skin_group": "lighter"})
    assert (c.gender, c.race, c.age) == ("male", "lighter", 75.0)
    assert c.groups["skin_group"] == "lighter" and c.groups["age_band_label"] == "more than 70"
    assert (d.identity, d.gender, d.race, d.age) == (None, "male", "VI", None)
    assert (e.gender, e.race, e.age, e.groups) == (None, None, 41.5, {})
    assert (x.identity, x.gender, x.race, x.age, x.groups["skin_group"]) == ("p3", "male", "I", 65.0, "lighter")
    assert a.group("camera") == "webcam" and a.group("age_band") == "18-29" and c.group("age_band") == "60+"
    assert not any("carry no identity" in note for note in dataset.notes)  # only where pairs are formed
    make_pairs(dataset)
    assert any("1 images carry no identity" in note for note in dataset.notes)
    assert describe_problems(dataset) == "set: 6 images; no problems found."


def test_csv_race_and_skin_type_columns_together(tmp_path):
    image(tmp_path / "a.png")
    labels = write_csv(tmp_path / "labels.csv", ["path", "race", "skin_type"], [["a.png", "Black", "V"]])
    (a,) = load_dataset(labels).images  # the CSV alone: its folder is the root
    assert a.race == "Black" and a.groups == {"skin_type": "V", "skin_group": "darker"}


def test_csv_problems_are_recorded_with_exact_counts(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png", "e.png", "f.png"):
        image(tmp_path / name)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "path,identity,gender,age,skin_type\n"
        "a.png,p1,f,30,\n"
        "gone.png,p1,f,30,\n"  # missing file
        "a.png,p9,m,31,\n"  # duplicate: first listing kept
        "./a.png,p9,m,31,\n"  # the same file spelled differently: duplicate too
        "b.png,p2,0,30,\n"  # 0/1 codes are refused
        "c.png,p3,x,old,\n"  # two unknown labels on one image
        "d.png,p4,m,30,VII\n"  # no Fitzpatrick type VII
        ",p5,m,30,\n"  # no path
        "e.png,p6,m,30,I,surplus\n"  # more values than columns: kept, extra ignored
        "f.png,p7,female,200,\n"  # implausible age
        "\n"  # blank lines are ignored
    )
    dataset = load_dataset(tmp_path, labels=labels)
    problems = dataset.problems
    assert problems.missing_files == ["gone.png"]
    assert problems.duplicate_paths == ["a.png", "./a.png"]
    assert len(problems.unknown_labels) == 5
    assert [u.split(": ")[1].split()[0] for u in problems.unknown_labels] == ["gender", "gender", "age",
                                                                              "skin_type", "age"]
    assert problems.unknown_labels[0].startswith("b.png: gender '0'")
    assert problem_kinds(problems) == {"missing_files": 1, "unknown_labels": 5, "duplicate_paths": 2, BAD_ROW: 2}
    assert problems.counts() == {"missing_files": 1, "unknown_labels": 5, "duplicate_paths": 2, "other": 2}
    images = by_name(dataset)
    assert sorted(images) == ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"]  # unknown labels: kept
    assert (images["a.png"].identity, images["a.png"].gender) == ("p1", "female")
    assert images["b.png"].gender is None and images["b.png"].age == 30.0
    assert (images["c.png"].gender, images["c.png"].age) == (None, None)
    assert images["d.png"].race is None and "skin_type" not in images["d.png"].groups
    assert images["e.png"].race == "I" and images["f.png"].age is None
    assert any("5 unrecognised label values were set to None" in note for note in dataset.notes)
    summary = describe_problems(dataset)
    assert summary.splitlines()[0] == f"{tmp_path.name}: 6 images; 10 problems found:"
    assert "missing_files: 1 listed but not on disk" in summary
    assert "duplicate_paths: 2" in summary and "unknown_labels: 5" in summary
    assert f"{BAD_ROW}: 2" in summary and "(2 more)" in summary


def test_csv_refusals(tmp_path):
    image(tmp_path / "a.png")
    with pytest.raises(InvalidParameterException, match="no 'path' column"):
        load_dataset(tmp_path, labels=write_csv(tmp_path / "l1.csv", ["file_name", "gender"], [["a.png", "f"]]))
    nothing = write_csv(tmp_path / "l2.csv", ["path", "gender"], [["x.png", "f"], ["y.png", "m"]])
    with pytest.raises(InvalidParameterException, match=r"no usable images .*missing_files 2"):
        load_dataset(tmp_path, labels=nothing)
    with pytest.raises(InvalidParameterException, match="not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(InvalidParameterException, match="unknown dataset layout"):
        load_dataset(tmp_path, layout="imagenet")
    with pytest.raises(InvalidParameterException, match="cannot tell the layout"):
        load_dataset(tmp_path)
    with pytest.raises(InvalidParameterException, match="needs a labels CSV"):
        load_dataset(tmp_path, layout="csv")


def test_gender_vocabulary():
    assert [normalize_gender(v) for v in ("F", "female", " Women ", "M", "MAN", "men", "", None)] == [
        "female", "female", "female", "male", "male", "male", None, None]
    for refused in ("0", "1", "x", "other"):
        with pytest.raises(ValueError):
            normalize_gender(refused)


# --------------------------------------------------------------------------- faces-dev


def test_faces_dev_layout_reads_labels_and_pairs(tmp_path):
    for name in ("utkface/25_1_0_1.jpg", "utkface/30_0_1_2.jpg", "lfw/Ann/Ann_0001.jpg", "lfw/Ann/Ann_0002.jpg",
                 "lfw/Bob/Bob_0001.jpg"):
        image(tmp_path / "images" / name)
    write_csv(tmp_path / "labels.csv", ["path", "source", "identity", "gender", "race", "age"], [
        ["images/utkface/25_1_0_1.jpg", "UTKFace-aligned", "", "female", "White", "25"],
        ["images/utkface/30_0_1_2.jpg", "UTKFace-aligned", "", "male", "Black", "30"],
        ["images/lfw/Ann/Ann_0001.jpg", "LFW-deepfunneled", "Ann", "female", "", ""],
        ["images/lfw/Ann/Ann_0002.jpg", "LFW-deepfunneled", "Ann", "female", "", ""],
        ["images/lfw/Bob/Bob_0001.jpg", "LFW-deepfunneled", "Bob", "male", "", ""],
    ])
    write_csv(tmp_path / "pairs.csv", ["path_a", "path_b", "same", "source", "gender_a", "gender_b"], [
        ["images/lfw/Ann/Ann_0001.jpg", "images/lfw/Ann/Ann_0002.jpg", "1", "LFW", "female", "female"],
        ["images/lfw/Ann/Ann_0001.jpg", "images/lfw/Bob/Bob_0001.jpg", "0", "LFW", "female", "male"],
        ["images/lfw/Bob/Bob_0001.jpg", "images/lfw/Bob/Bob_0009.jpg", "1", "LFW", "male", "male"],
    ])
    assert detect_layout(tmp_path) == "faces-dev"
    dataset = load_dataset(tmp_path)
    assert dataset.name == "faces-dev" and len(dataset.images) == 5
    assert [(os.path.basename(p.path_a), os.path.basename(p.path_b), p.same) for p in dataset.pairs] == [
        ("Ann_0001.jpg", "Ann_0002.jpg", True), ("Ann_0001.jpg", "Bob_0001.jpg", False)]
    assert problem_kinds(dataset.problems) == {PAIR_NOT_IN_SET: 1}
    assert "images/lfw/Bob/Bob_0009.jpg" in dataset.problems.other[0]
    images = by_name(dataset)
    utk = images["images/utkface/25_1_0_1.jpg"]
    assert (utk.identity, utk.gender, utk.race, utk.age) == (None, "female", "White", 25.0)
    assert utk.groups["source"] == "UTKFace-aligned"
    ann = images["images/lfw/Ann/Ann_0001.jpg"]
    assert (ann.identity, ann.gender, ann.race, ann.age) == ("Ann", "female", None, None)
    assert {i.groups["half"] for i in dataset.images} <= {faces_dev.CALIBRATION, faces_dev.CHECK}
    assert images["images/lfw/Ann/Ann_0001.jpg"].groups["half"] == images["images/lfw/Ann/Ann_0002.jpg"].groups["half"]
    assert any("UTKFace images carry no identities" in note for note in dataset.notes)


# --------------------------------------------------------------------------- UTKFace


def test_utkface_layout_parses_file_names(tmp_path):
    names = ["25_0_0_20170101000000001.jpg.chip.jpg", "30_1_1_20170101000000002.jpg",
             "40_1_4_20170101000000003.jpg.chip.jpg", "sub/22_1_2_20170101000000004.jpg.chip.jpg",
             "33_0_3_20170101000000005.jpg",
             "50_2_0_20170101000000006.jpg.chip.jpg",  # gender code 2: unknown, kept
             "51_0_7_20170101000000007.jpg.chip.jpg",  # race code 7: unknown, kept
             "61_1_20170109142408075.jpg.chip.jpg",  # a real UTKFace defect: no race field
             "portrait.png"]  # not a UTKFace name
    for name in names:
        image(tmp_path / name)
    (tmp_path / "README.txt").write_text("not an image")
    assert detect_layout(tmp_path) == "utkface"
    dataset = load_dataset(tmp_path)
    assert len(dataset.images) == 7 and dataset.pairs is None
    images = by_name(dataset)
    assert [(images[n].age, images[n].gender, images[n].race) for n in names[:7]] == [
        (25.0, "male", "White"), (30.0, "female", "Black"), (40.0, "female", "Others"), (22.0, "female", "Asian"),
        (33.0, "male", "Indian"), (50.0, None, "White"), (51.0, "male", None)]
    assert all(i.identity is None for i in dataset.images)
    assert problem_kinds(dataset.problems) == {"unknown_labels": 2, MALFORMED_NAME: 2}
    assert dataset.problems.unknown_labels[0].startswith("50_2_0_20170101000000006.jpg.chip.jpg: gender '2'")
    assert [o.split(" ")[1] for o in dataset.problems.other] == ["61_1_20170109142408075.jpg.chip.jpg",
                                                                 "portrait.png"]
    assert any("1 files that are not images" in note for note in dataset.notes)
    make_pairs(dataset)
    assert any("7 images carry no identity" in note for note in dataset.notes)

    assert make_pairs(dataset) == []  # one image per gender x race cell: no impostor pair possible
    pairs = make_pairs(dataset, within_group=("gender",))
    assert len(pairs) == 3 + 3 and not any(p.same for p in pairs)  # no identities: impostor pairs only


def test_utkface_with_nothing_usable_raises(tmp_path):
    image(tmp_path / "61_1_20170109142408075.jpg.chip.jpg")
    with pytest.raises(InvalidParameterException, match=f"no usable images.*{MALFORMED_NAME} 1"):
        load_dataset(tmp_path, layout="utkface")


# --------------------------------------------------------------------------- FairFace


def fairface_folder(root: Path) -> Path:
    for name in ("train/1.jpg", "val/1.jpg", "val/2.jpg", "val/4.jpg"):
        image(root / name)
    return write_csv(root / "fairface_label_val.csv", ["file", "age", "gender", "race", "service_test"], [
        ["val/1.jpg", "20-29", "Male", "East Asian", "True"],
        ["val/2.jpg", "more than 70", "Female", "Latino_Hispanic", "False"],
        ["val/3.jpg", "3-9", "Female", "Black", "True"],  # missing on disk
        ["val/1.jpg", "20-29", "Male", "East Asian", "True"],  # duplicate
        ["train/1.jpg", "0-2", "Female", "Hispanic", "False"],  # not a FairFace race
        ["val/4.jpg", "50-59", "Male", "Middle Eastern", "False"],
    ])


def test_fairface_layout(tmp_path):
    labels = fairface_folder(tmp_path)
    assert detect_layout(tmp_path) == "fairface" and detect_layout(tmp_path, labels) == "fairface"
    dataset = load_dataset(tmp_path)
    assert len(dataset.images) == 4
    images = by_name(dataset)
    one, two, train, four = images["val/1.jpg"], images["val/2.jpg"], images["train/1.jpg"], images["val/4.jpg"]
    assert (one.gender, one.race, one.age, one.groups) == (
        "male", "East Asian", 24.5, {"service_test": "True", "age_band_label": "20-29"})
    assert (two.gender, two.race, two.age, two.groups["age_band_label"]) == (
        "female", "Latino_Hispanic", 75.0, "more than 70")
    assert (train.gender, train.race, train.age) == ("female", None, 1.0)
    assert (four.race, four.age, four.group("age_band")) == ("Middle Eastern", 54.5, "45-59")
    assert dataset.problems.missing_files == ["val/3.jpg"] and dataset.problems.duplicate_paths == ["val/1.jpg"]
    assert len(dataset.problems.unknown_labels) == 1 and "race 'Hispanic'" in dataset.problems.unknown_labels[0]
    assert not dataset.problems.other
    assert load_dataset(tmp_path, labels=labels).images == dataset.images


def test_fairface_needs_one_label_file(tmp_path):
    labels = fairface_folder(tmp_path)
    (tmp_path / "fairface_label_train.csv").write_text(labels.read_text())
    with pytest.raises(InvalidParameterException, match="2 FairFace label CSVs"):
        load_dataset(tmp_path, layout="fairface")
    assert len(load_dataset(tmp_path, labels=tmp_path / "fairface_label_train.csv").images) == 4


# --------------------------------------------------------------------------- LFW


def lfw_folder(root: Path) -> Path:
    for name in ("Ann_Lee/Ann_Lee_0001.jpg", "Ann_Lee/Ann_Lee_0002.jpg", "Ann_Lee/Ann_Lee_0003.jpg",
                 "Bob/Bob_0001.jpg", "Cy_Do/Cy_Do_0001.jpg", "Cy_Do/Cy_Do_0002.jpg"):
        image(root / "lfw" / name)
    return root


def test_lfw_layout_with_pairs_and_gender_labels(tmp_path):
    lfw_folder(tmp_path)
    (tmp_path / "pairs.txt").write_text(
        "1\t3\n"
        "Ann_Lee\t1\t2\n"
        "Ann_Lee\t1\t3\n"
        "Ann_Lee\t2\t4\n"  # no Ann_Lee_0004.jpg
        "Ann_Lee\t1\tBob\t1\n"
        "Bob\t1\tCy_Do\t2\n"
        "Cy_Do\t1\tZed\t1\n")  # no Zed
    labels = write_csv(tmp_path / "genders.csv", ["identity", "gender", "country"], [
        ["Ann_Lee", "F", "US"], ["Bob", "M", ""], ["Cy_Do", "x", "VN"], ["Zed", "m", ""], ["Bob", "f", ""]])
    assert detect_layout(tmp_path) == "lfw" and detect_layout(tmp_path, labels) == "lfw"
    dataset = load_dataset(tmp_path, labels=labels)
    assert len(dataset.images) == 6
    assert Counter(i.identity for i in dataset.images) == {"Ann_Lee": 3, "Bob": 1, "Cy_Do": 2}
    assert {i.identity: i.gender for i in dataset.images} == {"Ann_Lee": "female", "Bob": "male", "Cy_Do": None}
    assert {i.identity: i.groups.get("country") for i in dataset.images} == {"Ann_Lee": "US", "Bob": None,
                                                                            "Cy_Do": "VN"}
    assert [(Path(p.path_a).name, Path(p.path_b).name, p.same) for p in dataset.pairs] == [
        ("Ann_Lee_0001.jpg", "Ann_Lee_0002.jpg", True), ("Ann_Lee_0001.jpg", "Ann_Lee_0003.jpg", True),
        ("Ann_Lee_0001.jpg", "Bob_0001.jpg", False), ("Bob_0001.jpg", "Cy_Do_0002.jpg", False)]
    assert all(os.path.isfile(p.path_a) and os.path.isfile(p.path_b) for p in dataset.pairs)
    assert problem_kinds(dataset.problems) == {"unknown_labels": 1, PAIR_NOT_IN_SET: 2, UNUSED_LABEL: 2}
    assert "Cy_Do" in dataset.problems.unknown_labels[0]
    assert "lfw/Ann_Lee/Ann_Lee_0004.jpg" in dataset.problems.other[-2]  # reported relative to the root


def test_lfw_view1_pairs_file_and_malformed_lines(tmp_path):
    lfw_folder(tmp_path)
    (tmp_path / "pairsDevTrain.txt").write_text(
        "2\n"  # View 1: 2 genuine + 2 impostor announced
        "Ann_Lee 1 2\n"
        "Cy_Do 1 2\n"
        "Ann_Lee 1 Cy_Do\n"  # malformed
        "Bob 1 Ann_Lee 3\n")
    dataset = read_lfw(tmp_path)
    assert [p.same for p in dataset.pairs] == [True, True, False]
    assert problem_kinds(dataset.problems) == {BAD_PAIRS_LINE: 1, PAIRS_COUNT: 1}
    assert "header announces 4 pairs, 3 readable" in dataset.problems.other[1]
    assert all(i.gender is None for i in dataset.images)
    assert any("no gender or race labels" in note for note in dataset.notes)

    (tmp_path / "pairs.txt").write_text("1\t1\nAnn_Lee\t2\t3\nBob\t1\tCy_Do\t1\n")
    dataset = load_dataset(tmp_path)  # pairs.txt is preferred over View 1's files
    assert [p.same for p in dataset.pairs] == [True, False] and not dataset.problems
    assert any("pairs read from pairs.txt; not read: pairsDevTrain.txt" in note for note in dataset.notes)


# --------------------------------------------------------------------------- make_pairs


def synthetic(images: list[AuditImage]) -> AuditDataset:
    return AuditDataset(name="synthetic", root="/", images=images)


def people() -> AuditDataset:
    images = []
    for person, (gender, race, count) in {
            "f1": ("female", "A", 3), "f2": ("female", "A", 2), "f3": ("female", "A", 1),
            "f4": ("female", "B", 2), "f5": ("female", "B", 2), "f6": ("female", "B", 2),
            "m1": ("male", "A", 4), "m2": ("male", "A", 1), "m3": ("male", "A", 1),
            "m4": ("male", None, 1), "m5": ("male", None, 1)}.items():
        images += [AuditImage(path=f"/x/{person}_{n}.jpg", identity=person, gender=gender, race=race)
                   for n in range(count)]
    return synthetic(images)


def test_make_pairs_genuine_and_within_group_impostors():
    dataset = people()
    identity = {i.path: i for i in dataset.images}
    pairs = make_pairs(dataset)
    genuine = [p for p in pairs if p.same]
    impostors = [p for p in pairs if not p.same]
    # every within-identity pair: f1 3, f2 1, f4-f6 1 each, m1 6
    assert len(genuine) == 3 + 1 + 3 + 6
    assert all(identity[p.path_a].identity == identity[p.path_b].identity for p in genuine)
    assert all(p.path_a < p.path_b for p in pairs) and len(set(pairs)) == len(pairs)
    for p in impostors:
        a, b = identity[p.path_a], identity[p.path_b]
        assert a.identity != b.identity and (a.gender, a.race) == (b.gender, b.race)
    groups = Counter((identity[p.path_a].gender, identity[p.path_a].race) for p in impostors)
    # a group gets as many impostors as it has genuine pairs; (male, None) has none, so one per image
    # (2 wanted), but its two images allow only one pair
    assert groups == {("female", "A"): 4, ("female", "B"): 3, ("male", "A"): 6, ("male", None): 1}
    assert make_pairs(dataset) == pairs  # deterministic
    assert make_pairs(dataset, seed=1) != pairs
    assert [p for p in make_pairs(dataset, seed=1) if p.same] == genuine

    triple = make_pairs(dataset, impostors_per_genuine=3)
    counts = Counter((identity[p.path_a].gender, identity[p.path_a].race) for p in triple if not p.same)
    # (female, A): 3 x 4 = 12 wanted, C(6,2) - 3 - 1 = 11 possible; (female, B): 9 of 12 possible;
    # (male, A): 3 x 6 = 18 wanted, C(6,2) - 6 = 9 possible; (male, None): 6 wanted, 1 possible
    assert counts == {("female", "A"): 11, ("female", "B"): 9, ("male", "A"): 9, ("male", None): 1}
    # shortfalls noted: (male, None) at x1, then (female, A), (male, A), (male, None) at x3
    assert sum("fewer than the" in note for note in dataset.notes) == 4
    assert list(make_pairs(dataset, impostors_per_genuine=0)) == genuine


def test_make_pairs_without_identities_and_custom_groups():
    images = [AuditImage(path=f"/u/{n:02d}.jpg", gender=("female", "male")[n % 2], race="R",
                         groups={"camera": ("c1", "c2")[n // 10]}) for n in range(20)]
    dataset = synthetic(images)
    pairs = make_pairs(dataset, impostors_per_genuine=2)
    assert not any(p.same for p in pairs)
    assert len(pairs) == 2 * 20  # no genuine pairs: impostors_per_genuine x images in each group
    gender = {i.path: i.gender for i in images}
    assert all(gender[p.path_a] == gender[p.path_b] for p in pairs)
    assert any("20 images carry no identity" in note for note in dataset.notes)
    assert len(make_pairs(dataset, within_group=("camera",))) == 20
    assert len(make_pairs(dataset, within_group=())) == 20  # one group: any two images
    with pytest.raises(InvalidParameterException, match="'lighting' is not a label"):
        make_pairs(dataset, within_group=("lighting",))
    with pytest.raises(InvalidParameterException, match="impostors_per_genuine"):
        make_pairs(dataset, impostors_per_genuine=-1)


# --------------------------------------------------------------------------- the real faces-dev


def test_real_faces_dev(faces_dev_root):
    """Read in place (research-only data, never copied). conftest's faces_dev_root skips when
    faces-dev is missing, with the reason, and fails under CI=true."""
    root = faces_dev_root
    assert detect_layout(root) == "faces-dev"
    dataset = load_dataset(root)
    assert len(dataset.images) == 2808 and len(dataset.pairs) == 2606
    assert not dataset.problems, describe_problems(dataset)
    assert describe_problems(dataset) == "faces-dev: 2808 images, 2606 pairs; no problems found."
    utkface = [i for i in dataset.images if i.identity is None]
    cells = itertools.product(("female", "male"), ("White", "Black", "Asian", "Indian", "Others"))
    assert Counter((i.gender, i.race) for i in utkface) == dict.fromkeys(cells, 200)
    assert all(i.age is not None and i.age >= 18 for i in utkface)
    lfw = [i for i in dataset.images if i.identity is not None]
    assert len(lfw) == 808 and len({i.identity for i in lfw}) == 200
    assert Counter(p.same for p in dataset.pairs) == {True: 1303, False: 1303}
    assert Counter(i.groups["half"] for i in utkface) == {faces_dev.CALIBRATION: 1000, faces_dev.CHECK: 1000}
    pairs = make_pairs(dataset)
    assert Counter(p.same for p in pairs) == {True: 1303, False: 1303 + 2000}


def test_lfw_folders_without_pairs_file(tmp_path):
    lfw_folder(tmp_path)
    assert detect_layout(tmp_path) == "lfw"
    dataset = load_dataset(tmp_path)
    assert len(dataset.images) == 6 and dataset.pairs is None and not dataset.problems
    assert [p.same for p in make_pairs(dataset)].count(True) == 3 + 1
