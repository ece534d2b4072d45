"""The blind review pages' pieces that are not HTTP: pictures as data URIs, candidates by letter, the decision form.

A reviewer sees the candidates in the order GetReviewItem gives them (shuffled for that
reviewer by the review store), named by letters A, B, C... -- letters, not numbers, so
that nothing on the page reads as a rank. The form names each candidate's fields by its
position and carries the order it was shown in (``order``), so the page that reveals the
scores can say which letter each score belongs to; the review store checks the candidate
ids again (an unknown or missing one is refused), so a forged order can only fail.

Pictures are the review store's own (the sealed probe and face crops GetReviewItem
returns); they go into the page as ``data:`` URIs and are kept nowhere else.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from faceaudit.console.web import Form

# The most candidates one decision form takes (two fields each): a public-safety search
# returns at most 10; an item with more is decided with ``faceaudit review decide``.
MAX_CANDIDATES_DECIDED = 100
DECISION_CHOICES = (("confirm", "Confirm: the same person"), ("reject", "Reject: a different person"),
                    ("inconclusive", "Inconclusive: cannot tell"))
_DECISIONS = {value for value, _ in DECISION_CHOICES}
MAX_REASON_CHARS = 2000


def image_data_uri(data: bytes | None) -> str | None:
    """A JPEG or PNG as a ``data:`` URI for an <img> (the CSP allows only those); None for anything else."""
    if not data:
        return None
    if data[:3] == b"\xff\xd8\xff":
        kind = "jpeg"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        kind = "png"
    else:
        return None
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


def letter(position: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: a name for a shown candidate that says nothing about rank."""
    name = ""
    position += 1
    while position:
        position, rest = divmod(position - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


def blind_candidates(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    """GetReviewItem's candidates in its order, each with a letter and its crop as a data URI."""
    return [{"position": i, "letter": letter(i), "id": str(c.get("CandidateId", "")),
             "type": str(c.get("CandidateType", "FACE")), "crop": image_data_uri(c.get("Crop"))}
            for i, c in enumerate(item.get("Candidates") or [])]


@dataclass
class DecisionForm:
    """What a reviewer sent: the order shown, and per position the decision and reason typed."""

    order: list[str]
    decisions: dict[int, str] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def request(self, item_id: str) -> dict[str, Any]:
        """DecideReviewItem's request."""
        return {"ItemId": item_id, "Decisions": [
            {"CandidateId": cid, "Decision": self.decisions[i].upper(), "Reason": self.reasons[i]}
            for i, cid in enumerate(self.order)]}


def read_decisions(form: Form) -> DecisionForm:
    """The decision form; ``problems`` says what a person must fix (every candidate needs a
    decision and a reason) before anything is sent."""
    order = [cid for cid in form.get("order").split() if cid][:MAX_CANDIDATES_DECIDED]
    read = DecisionForm(order)
    if not order:
        read.problems.append("The form lists no candidate; reload the item and decide again.")
    for i in range(len(order)):
        decision = form.get(f"decision-{i}").strip().lower()
        reason = form.get(f"reason-{i}").strip()
        if decision:
            read.decisions[i] = decision
        if reason:
            read.reasons[i] = reason
        if decision not in _DECISIONS:
            read.problems.append(f"Candidate {letter(i)}: choose confirm, reject or inconclusive.")
        if not reason:
            read.problems.append(f"Candidate {letter(i)}: give a reason for your decision.")
        elif len(reason) > MAX_REASON_CHARS:
            read.problems.append(f"Candidate {letter(i)}: the reason is longer than {MAX_REASON_CHARS} characters.")
    return read


def revealed_rows(revealed: Sequence[Mapping[str, Any]], order: Sequence[str]) -> list[dict[str, Any]]:
    """DecideReviewItem's Revealed candidates (the machine's rank order), each with the letter it was shown as."""
    shown_as = {cid: letter(i) for i, cid in enumerate(order)}
    return [{"letter": shown_as.get(str(r.get("CandidateId")), "?"), "id": r.get("CandidateId"),
             "type": r.get("CandidateType"), "similarity": r.get("Similarity"), "rank": r.get("Rank"),
             "decision": str(r.get("YourDecision", "")).lower()} for r in revealed]
