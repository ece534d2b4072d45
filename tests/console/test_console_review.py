"""The blind review pages' form and naming logic (faceaudit.console.review), without a server."""

from __future__ import annotations

from faceaudit.console.review import (
    MAX_CANDIDATES_DECIDED,
    blind_candidates,
    image_data_uri,
    letter,
    read_decisions,
    revealed_rows,
)
from faceaudit.console.web import Form


def test_candidates_are_named_by_letters_that_go_on_past_z():
    assert [letter(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == [
        "A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"]


def test_only_jpeg_and_png_become_pictures():
    assert image_data_uri(b"\xff\xd8\xff\xe0rest").startswith("data:image/jpeg;base64,")
    assert image_data_uri(b"\x89PNG\r\n\x1a\nrest").startswith("data:image/png;base64,")
    assert image_data_uri(b"<svg onload=alert(1)>") is None  # nothing else is drawn as an image
    assert image_data_uri(None) is None and image_data_uri(b"") is None


def test_blind_candidates_keep_the_stores_order_and_carry_no_score():
    item = {"Candidates": [{"CandidateId": "f2", "CandidateType": "FACE", "Crop": b"\xff\xd8\xffx"},
                           {"CandidateId": "f1", "CandidateType": "FACE"}]}
    shown = blind_candidates(item)
    assert [(c["letter"], c["id"]) for c in shown] == [("A", "f2"), ("B", "f1")]
    assert shown[0]["crop"].startswith("data:image/jpeg") and shown[1]["crop"] is None
    assert all(set(c) == {"position", "letter", "id", "type", "crop"} for c in shown)


def test_every_candidate_needs_a_decision_and_a_reason_before_anything_is_sent():
    read = read_decisions(Form({"order": "f2 f1", "decision-0": "confirm", "reason-0": "same jaw",
                                "decision-1": "maybe", "reason-1": "  "}))
    assert read.problems == ["Candidate B: choose confirm, reject or inconclusive.",
                             "Candidate B: give a reason for your decision."]
    read = read_decisions(Form({"order": "f2 f1", "decision-0": "confirm", "reason-0": " same jaw ",
                                "decision-1": "REJECT", "reason-1": "different ears"}))
    assert read.problems == []
    assert read.request("item-1") == {"ItemId": "item-1", "Decisions": [
        {"CandidateId": "f2", "Decision": "CONFIRM", "Reason": "same jaw"},
        {"CandidateId": "f1", "Decision": "REJECT", "Reason": "different ears"}]}
    assert read_decisions(Form({"order": ""})).problems == [
        "The form lists no candidate; reload the item and decide again."]
    too_long = read_decisions(Form({"order": "f1", "decision-0": "reject", "reason-0": "x" * 2001}))
    assert too_long.problems == ["Candidate A: the reason is longer than 2000 characters."]
    many = read_decisions(Form({"order": " ".join(f"f{i}" for i in range(MAX_CANDIDATES_DECIDED + 5))}))
    assert len(many.order) == MAX_CANDIDATES_DECIDED


def test_revealed_scores_are_named_by_the_letter_each_candidate_was_shown_as():
    revealed = [{"CandidateId": "f1", "CandidateType": "FACE", "Similarity": 99.9, "Rank": 1,
                 "YourDecision": "CONFIRM"},
                {"CandidateId": "f2", "CandidateType": "FACE", "Similarity": 99.1, "Rank": 2,
                 "YourDecision": "REJECT"}]
    rows = revealed_rows(revealed, ["f2", "f1"])
    assert [(r["letter"], r["rank"], r["decision"]) for r in rows] == [("B", 1, "confirm"), ("A", 2, "reject")]
