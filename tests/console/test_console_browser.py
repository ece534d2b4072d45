"""The web console as people use it: real headless Chromium against a real ``faceaudit serve``.

Each page is checked with axe-core (no serious or critical violation), must work under its
Content Security Policy (no violation logged), and is saved as a screenshot in
build/console-screenshots/. Keyboard use is driven with real key presses.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from faceaudit.console import LABEL

pytestmark = pytest.mark.models  # the server process loads the face models

AXE_IMPACTS_REFUSED = ("serious", "critical")


def check_accessibility(page, axe: str) -> None:
    page.evaluate(axe)  # through the DevTools protocol: the page's CSP refuses injected scripts, rightly
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [f"{v['id']} ({v['impact']}): {v['help']} -- {[n['target'] for n in v['nodes']][:5]}"
           for v in result["violations"] if v["impact"] in AXE_IMPACTS_REFUSED]
    assert not bad, "axe-core found:\n" + "\n".join(bad)
    assert not page.csp_violations, page.csp_violations


def look(page, axe: str, screenshots: Path, name: str) -> None:
    check_accessibility(page, axe)
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def sign_in(page, base: str, key: tuple[str, str]) -> None:
    page.goto(base + "/console/sign-in")
    page.get_by_label("Access key id").fill(key[0])
    page.get_by_label("Secret access key").fill(key[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + "/console/")


def go(page, link: str) -> None:
    """Follow a link of the console's navigation bar, returning once the new page has loaded
    (a locator's count() does not wait, so a check right after a bare click can read the old page)."""
    with page.expect_navigation():
        page.get_by_role("navigation", name="Console").get_by_role("link", name=link, exact=True).click()


def csrf_of(page) -> str:
    return page.locator('input[name="csrf"]').first.get_attribute("value")


def test_an_admin_signs_in_by_keyboard_indexes_a_face_searches_by_image_and_signs_out(
        console_server, keys, open_page, axe, screenshots, astronaut_jpeg, tmp_path):
    base = console_server.endpoint_url
    page = open_page()
    page.goto(base + "/console/collections")
    assert page.url == base + "/console/sign-in"  # not signed in yet
    look(page, axe, screenshots, "sign-in")

    # Keyboard only: Tab from the top reaches the skip link, the two fields and the button in order.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")  # the brand link
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "access_key_id"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), "the focused field shows no focus outline"
    page.keyboard.type(keys["admin"][0])
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "secret"
    page.keyboard.type(keys["admin"][1])
    page.keyboard.press("Enter")
    page.wait_for_url(base + "/console/")
    assert "Signed in as initial (admin)" in page.locator(".who").inner_text()
    cookie = next(c for c in page.context.cookies() if c["name"] == "faceaudit_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]  # plain http here
    look(page, axe, screenshots, "home")

    # Create a collection with the form, then index the astronaut into it.
    go(page, "Collections")
    page.get_by_label("Collection id").fill("console-crew")
    page.get_by_role("button", name="Create collection").click()
    page.wait_for_url(base + "/console/collections/console-crew")
    probe = tmp_path / "astronaut.jpg"
    probe.write_bytes(astronaut_jpeg)
    page.get_by_label("Image (JPEG or PNG, up to 5 MB)").set_input_files(str(probe))
    page.get_by_label("External image id (optional)").fill("eileen-collins")
    page.get_by_role("button", name="Index face").click()
    assert "Indexed 1 face." in page.locator(".notice").inner_text()
    assert "eileen-collins" in page.locator("table").last.inner_text()
    described = console_server.client().describe_collection(CollectionId="console-crew")
    assert described["FaceCount"] == 1  # through the API: the console stored what it said
    rates = page.locator("table.rates tbody tr")
    assert rates.count() == 10  # every gender x race group of the shipped table, at threshold 80
    look(page, axe, screenshots, "collection")

    go(page, "Collections")
    row = page.locator("tbody tr", has_text="console-crew")
    assert row.locator("td").nth(0).inner_text() == "1"  # faces
    assert "up to" in row.inner_text()  # the worst group's false match rate at its threshold
    look(page, axe, screenshots, "collections")

    # Search by image: the candidate, its similarity, the label, the per-group rates at the threshold.
    go(page, "Search")
    page.get_by_label("Collection").select_option("console-crew")
    page.get_by_label("Image (JPEG or PNG, up to 5 MB)").set_input_files(str(probe))
    page.get_by_label("Threshold (similarity 0–100)").fill("95")
    page.get_by_label("Purpose").fill("console test")
    page.get_by_label("Case reference").fill("T-1")
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector("#results-h")
    candidate = page.locator("li.candidate")
    assert candidate.count() == 1
    assert LABEL in candidate.inner_text()
    assert float(candidate.locator(".similarity").inner_text()) > 99
    assert "eileen-collins" in candidate.inner_text()
    table = page.locator("table.rates")
    assert "Measured at 95." in table.locator("caption").inner_text()
    assert table.locator("tbody tr").count() == 10
    assert page.locator("img[alt='The image searched with']").count() == 1
    look(page, axe, screenshots, "search")
    with page.expect_response(base + "/console/search?collection=console-crew") as answer:
        page.goto(base + "/console/search?collection=console-crew")
    assert answer.value.headers["cache-control"] == "no-store"
    assert answer.value.headers["x-frame-options"] == "DENY"

    # Sign out: back to sign-in, and the pages are closed to this browser again.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(base + "/console/sign-in?notice=signed-out")
    assert "You are signed out." in page.locator(".notice").inner_text()
    page.goto(base + "/console/collections")
    assert page.url == base + "/console/sign-in"


def test_an_auditor_reads_and_compares_audit_reports_but_cannot_search_or_index(
        console_server, keys, reports_dir, open_page, axe, screenshots, astronaut_jpeg):
    base = console_server.endpoint_url
    admin = console_server.client()
    admin.create_collection(CollectionId="console-audited")
    # A report may be called anything, "compare" too: the comparison's path is not a report's.
    shutil.copytree(reports_dir / "system-b", reports_dir / "compare")
    page = open_page()
    sign_in(page, base, keys["auditor"])
    nav = page.get_by_role("navigation", name="Console").get_by_role("link").all_inner_texts()
    assert nav == ["Audit reports", "Search log", "Transparency"]  # no search, index, collections or review

    go(page, "Audit reports")
    assert page.locator("tbody tr").count() == 3
    look(page, axe, screenshots, "reports")
    page.get_by_role("link", name="compare", exact=True).click()
    page.wait_for_url(base + "/console/reports/compare/")
    assert "system-b" in page.locator("main").inner_text()  # the copied report, not the comparison form's error
    assert page.locator("main svg").count() >= 1
    go(page, "Audit reports")
    page.get_by_role("link", name="system-a").click()
    page.wait_for_url(base + "/console/reports/system-a/")
    assert page.locator("h1").first.inner_text() != ""
    assert page.locator("main svg").count() >= 1  # the report's plots, inside the console's frame
    assert "Signed in as console-auditor (auditor)" in page.locator(".who").inner_text()
    look(page, axe, screenshots, "report")
    markdown = page.request.get(base + "/console/reports/system-a/report.md")
    assert markdown.status == 200 and markdown.text().startswith("#")

    go(page, "Audit reports")
    page.get_by_label("First report").select_option("system-a")
    page.get_by_label("Second report").select_option("system-b")
    page.get_by_role("button", name="Compare").click()
    page.wait_for_url("**/console/report-comparison?a=system-a&b=system-b")
    assert "2 audit reports side by side" in page.locator("h1").first.inner_text()
    body = page.locator("main").inner_text()
    assert "system-a" in body and "system-b" in body
    look(page, axe, screenshots, "compare")

    # Search and index are refused: the pages, and their form posts even with a valid CSRF token.
    for path in ("/console/search", "/console/collections", "/console/collections/console-audited"):
        response = page.goto(base + path)
        assert response.status == 403, path
        assert "has the role auditor" in page.locator(".error").inner_text()
    page.goto(base + "/console/")
    token = csrf_of(page)
    image = {"name": "probe.jpg", "mimeType": "image/jpeg", "buffer": astronaut_jpeg}
    searched = page.request.post(base + "/console/search", multipart={
        "csrf": token, "collection": "console-audited", "image": image})
    indexed = page.request.post(base + "/console/collections/console-audited/faces", multipart={
        "csrf": token, "image": image})
    assert searched.status == 403 and indexed.status == 403
    assert admin.describe_collection(CollectionId="console-audited")["FaceCount"] == 0


def test_other_roles_get_403_and_an_operator_cannot_create_collections(console_server, keys, open_page):
    base = console_server.endpoint_url
    page = open_page()
    sign_in(page, base, keys["reviewer"])
    for path in ("/console/collections", "/console/search", "/console/reports"):
        assert page.goto(base + path).status == 403, path

    page = open_page()
    sign_in(page, base, keys["operator"])
    assert page.goto(base + "/console/collections").status == 200
    assert page.get_by_role("button", name="Create collection").count() == 0
    forged = page.request.post(base + "/console/collections",
                               form={"csrf": csrf_of(page), "collection_id": "by-an-operator"})
    assert forged.status == 403
    assert "by-an-operator" not in console_server.client().list_collections()["CollectionIds"]


def _session_row(console_server, page):
    session_id = next(c["value"] for c in page.context.cookies() if c["name"] == "faceaudit_console")
    return hashlib.sha256(session_id.encode()).hexdigest()


def test_an_expired_session_goes_back_to_sign_in(console_server, keys, open_page, axe, screenshots):
    base = console_server.endpoint_url
    for column, age_minutes in (("last_seen_ms", 31), ("created_ms", 8 * 60 + 1)):
        page = open_page()
        sign_in(page, base, keys["operator"])
        assert page.goto(base + "/console/collections").status == 200
        # Time passes: the session's last use (or its sign-in) is set back in the server's session file.
        digest = _session_row(console_server, page)
        with sqlite3.connect(console_server.data_dir / "console.db") as db:
            moved = db.execute(f"UPDATE sessions SET {column} = ? WHERE id_sha256 = ?",
                               (int((time.time() - age_minutes * 60) * 1000), digest)).rowcount
        assert moved == 1
        page.goto(base + "/console/collections")
        assert page.url == base + "/console/sign-in?notice=expired", column
        assert "Your session ended" in page.locator(".notice").inner_text()
        assert page.goto(base + "/console/").url.startswith(base + "/console/sign-in")  # and it stays ended
    look(page, axe, screenshots, "expired")


def test_a_form_without_its_csrf_token_is_refused(console_server, keys, open_page):
    base = console_server.endpoint_url
    page = open_page()
    sign_in(page, base, keys["admin"])
    page.goto(base + "/console/collections")
    missing = page.request.post(base + "/console/collections", form={"collection_id": "csrf-missing"})
    wrong = page.request.post(base + "/console/collections",
                              form={"collection_id": "csrf-wrong", "csrf": csrf_of(page)[:-2] + "xx"})
    assert missing.status == 403 and wrong.status == 403
    assert "CSRF token is missing or wrong" in missing.text()
    made = page.request.post(base + "/console/collections", max_redirects=0,
                             form={"collection_id": "csrf-right", "csrf": csrf_of(page)})
    assert made.status == 303  # the same request with its token is accepted
    invalid = page.request.post(base + "/console/collections",
                                form={"collection_id": "no spaces!", "csrf": csrf_of(page)})
    assert invalid.status == 400  # validated by Rekognition's model, as a signed request would be
    assert "collectionId" in invalid.text() and "failed to satisfy constraint" in invalid.text()
    collections = console_server.client().list_collections()["CollectionIds"]
    assert "csrf-right" in collections and "csrf-missing" not in collections and "csrf-wrong" not in collections


def test_a_revoked_key_is_signed_out_at_its_next_page(console_server, run_faceaudit, open_page):
    base = console_server.endpoint_url
    shown = json.loads(run_faceaudit("keys", "create", "--name", "console-leaver", "--role", "operator",
                                     "--data-dir", str(console_server.data_dir)))["AccessKey"]
    page = open_page()
    sign_in(page, base, (shown["AccessKeyId"], shown["SecretAccessKey"]))
    assert page.goto(base + "/console/collections").status == 200
    run_faceaudit("keys", "revoke", "console-leaver", "--data-dir", str(console_server.data_dir))
    page.goto(base + "/console/collections")
    assert page.url == base + "/console/sign-in?notice=revoked"


def tab_to(page, script: str, limit: int = 40) -> None:
    """Press Tab until ``script`` (about document.activeElement) is true: keyboard only, as a person would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const e = document.activeElement; return Boolean({script}); }})()"):
            return
    raise AssertionError(f"Tab never reached an element where {script}")


def test_a_public_safety_search_is_reviewed_blind_by_two_reviewers_then_released_to_the_operator(
        console_server, keys, open_page, axe, screenshots, astronaut_jpeg, tmp_path):
    base = console_server.endpoint_url
    probe = tmp_path / "astronaut.jpg"
    probe.write_bytes(astronaut_jpeg)

    # The admin makes a public-safety collection and indexes a face into it.
    admin = open_page()
    sign_in(admin, base, keys["admin"])
    go(admin, "Collections")
    admin.get_by_label("Collection id").fill("console-guarded")
    admin.get_by_label("Use policy").select_option("public-safety")
    admin.get_by_role("button", name="Create collection").click()
    admin.wait_for_url(base + "/console/collections/console-guarded")
    facts = admin.locator("dl.facts").inner_text()
    assert "public-safety" in facts and "99" in facts  # the policy read back from the tag, and its floor
    admin.get_by_label("Image (JPEG or PNG, up to 5 MB)").set_input_files(str(probe))
    admin.get_by_label("External image id (optional)").fill("eileen-collins")
    admin.get_by_role("button", name="Index face").click()
    assert "Indexed 1 face." in admin.locator(".notice").inner_text()
    # The same photo again: a second candidate that matches as well, which the reviewers reject.
    admin.get_by_label("Image (JPEG or PNG, up to 5 MB)").set_input_files(str(probe))
    admin.get_by_label("External image id (optional)").fill("duplicate-upload")
    admin.get_by_role("button", name="Index face").click()
    assert "Indexed 1 face." in admin.locator(".notice").inner_text()
    indexed = {f["FaceId"]: f["ExternalImageId"]
               for f in console_server.client().list_faces(CollectionId="console-guarded")["Faces"]}
    verdict = {face: ("confirm" if name == "eileen-collins" else "reject") for face, name in indexed.items()}

    # The operator searches: without a purpose refused by the server's guard, with one held for review.
    operator = open_page()
    sign_in(operator, base, keys["operator"])
    assert "Review queue" not in operator.get_by_role("navigation", name="Console").inner_text()
    operator.goto(base + "/console/search?collection=console-guarded")
    operator.get_by_label("Image (JPEG or PNG, up to 5 MB)").set_input_files(str(probe))
    operator.get_by_role("button", name="Search").click()
    operator.wait_for_selector("#search-error")
    assert "purpose" in operator.locator("#search-error").inner_text().lower()
    operator.get_by_label("Image (JPEG or PNG, up to 5 MB)").set_input_files(str(probe))
    operator.get_by_label("Purpose").fill("console test")
    operator.get_by_label("Case reference").fill("T-2")
    operator.get_by_role("button", name="Search").click()
    operator.wait_for_selector("#results-h")
    assert "at threshold 99" in operator.locator("#results-h").inner_text()  # the policy's floor, by default
    assert operator.locator("li.candidate").count() == 0  # held for blind review, not shown
    assert "review item" in operator.locator(".notice").inner_text()
    assert "held with the review item" in operator.locator(".results").inner_text()
    look(operator, axe, screenshots, "search-under-review")
    operator.get_by_role("link", name="Follow the review item's result").click()
    operator.wait_for_url(re.compile(r".*/console/results/[0-9a-f-]{36}\?threshold=99$"))
    item_id = re.search(r"/results/([0-9a-f-]{36})", operator.url).group(1)
    result_url = operator.url
    assert "Pending review: 0 of 2" in operator.locator("#pending").inner_text()
    assert operator.locator("li.candidate").count() == 0
    look(operator, axe, screenshots, "review-pending")

    # The operator cannot review it (nor any search): the pages answer 403, a forged decision too.
    for path in ("/console/review", f"/console/review/{item_id}"):
        assert operator.goto(base + path).status == 403, path
    forged = operator.request.post(base + f"/console/review/{item_id}", form={
        "csrf": csrf_of(operator), "order": "x", "decision-0": "confirm", "reason-0": "mine"})
    assert forged.status == 403
    operator.goto(result_url)
    assert "Pending review: 0 of 2" in operator.locator("#pending").inner_text()

    # The first reviewer, keyboard only: the queue, the item (blind), a decision with its reason.
    reviewer = open_page()
    sign_in(reviewer, base, keys["reviewer"])
    go(reviewer, "Review queue")
    row = reviewer.locator("tbody tr", has_text="console-guarded")
    assert row.count() == 1 and "0 of 2" in row.inner_text() and "T-2" in row.inner_text()
    look(reviewer, axe, screenshots, "review-queue")
    reviewer.goto(base + "/console/review")
    tab_to(reviewer, f"e.href && e.href.endsWith('/review/{item_id}')")
    reviewer.keyboard.press("Enter")
    reviewer.wait_for_url(base + f"/console/review/{item_id}")
    blind = reviewer.content()
    assert reviewer.locator("img[alt^='The probe']").count() == 1
    for name in ("A", "B"):  # each indexed face's crop, kept for review
        assert reviewer.locator(f"img[alt^='Candidate {name}:']").count() == 1
    shown = reviewer.locator("main").inner_text().lower()
    assert "similarity" not in shown and "rank" not in shown  # blind: no score, no rank, not even named
    order = reviewer.locator("section.candidate-review figcaption code").all_inner_texts()
    assert sorted(order) == sorted(indexed)
    look(reviewer, axe, screenshots, "review-item")
    for position, face in enumerate(order):  # Space checks the group's first choice, the arrow moves on
        tab_to(reviewer, f"e.name === 'decision-{position}'")
        reviewer.keyboard.press("Space")
        if verdict[face] == "reject":
            reviewer.keyboard.press("ArrowDown")
        assert reviewer.evaluate(f"document.querySelector('input[name=decision-{position}]:checked').value") \
            == verdict[face]
        reviewer.keyboard.press("Tab")
        assert reviewer.evaluate("document.activeElement.id") == f"reason-{position}"
        reviewer.keyboard.type("Same face shape, eyes and hairline as the probe." if verdict[face] == "confirm"
                               else "The same photo uploaded twice: not a second sighting.")
    reviewer.keyboard.press("Tab")
    assert reviewer.evaluate("document.activeElement.textContent") == "Record my decisions"
    reviewer.keyboard.press("Enter")
    reviewer.wait_for_selector("#revealed-h")
    assert "1 of 2 reviewers have decided" in reviewer.locator(".notice").inner_text()
    revealed = reviewer.locator("tbody tr")
    assert revealed.count() == 2
    similarities = {}
    for row in revealed.all():  # the machine's rank order, each named by the letter it was shown as
        cells = row.locator("th, td").all_inner_texts()
        letter, decision, score, face = cells[0], cells[1], cells[2], cells[4]
        assert order["AB".index(letter)] == face and decision == verdict[face]
        similarities[face] = score
        assert float(score) > 99
    assert [r.locator("td").nth(2).inner_text() for r in revealed.all()] == ["1", "2"]
    assert not any(f">{score}<" in blind for score in similarities.values())  # no score hidden in the blind page
    similarity = next(score for face, score in similarities.items() if verdict[face] == "confirm")
    look(reviewer, axe, screenshots, "review-decided")
    again = reviewer.goto(base + f"/console/review/{item_id}")
    assert again.status == 403 and "already decided" in reviewer.locator(".error").inner_text()
    reviewer.goto(base + "/console/review")
    assert reviewer.locator("tbody tr", has_text="console-guarded").count() == 0  # decided: off its queue
    operator.goto(result_url)
    assert "Pending review: 1 of 2" in operator.locator("#pending").inner_text()  # one is not enough

    # The second reviewer: a decision without a reason is refused, then one with it releases the candidate.
    second = open_page()
    sign_in(second, base, keys["reviewer-2"])
    go(second, "Review queue")
    second.get_by_role("link", name=re.compile("Review item")).first.click()
    second.wait_for_url(base + f"/console/review/{item_id}")
    shown_order = second.locator("input[name=order]").get_attribute("value")
    unreasoned = second.request.post(base + f"/console/review/{item_id}", form={
        "csrf": csrf_of(second), "order": shown_order, "decision-0": "reject", "reason-0": " ",
        "decision-1": "reject", "reason-1": "not the same"})
    assert unreasoned.status == 400 and "Candidate A: give a reason" in unreasoned.text()
    for position, face in enumerate(shown_order.split()):
        second.locator(f"#decision-{position}-{verdict[face]}").check()
        second.get_by_label(f"Reason for your decision on candidate {'AB'[position]}").fill(
            "Same person: nose, brows and jaw." if verdict[face] == "confirm" else "A duplicate of the same photo.")
    second.get_by_role("button", name="Record my decisions").click()
    second.wait_for_selector("#revealed-h")
    assert "released to the searcher" in second.locator(".notice").inner_text()

    # Released: the operator sees the candidate, labelled, with its similarity and the per-group rates.
    operator.goto(result_url)
    assert operator.locator("dd.state").inner_text() == "released"
    assert re.search(r"Candidates the search found\s+2", operator.locator("dl.facts").first.inner_text())
    candidate = operator.locator("li.candidate")
    assert candidate.count() == 1  # the one both reviewers confirmed; the rejected duplicate is not released
    assert LABEL in candidate.inner_text() and "eileen-collins" in candidate.inner_text()
    assert candidate.locator(".similarity").inner_text() == similarity
    table = operator.locator("table.rates")
    assert "Measured at 99." in table.locator("caption").inner_text()
    assert table.locator("tbody tr").count() == 10
    look(operator, axe, screenshots, "review-released")
    # The same result, opened by its item id from the operator's "Review results" page.
    go(operator, "Review results")
    look(operator, axe, screenshots, "review-results")
    operator.get_by_label("Review item id").fill(item_id)
    operator.get_by_role("button", name="Open result").click()
    operator.wait_for_url(base + f"/console/results/{item_id}")
    assert operator.locator("li.candidate .similarity").inner_text() == similarity
    assert "Measured at 99." in operator.locator("table.rates caption").inner_text()  # the policy's floor


def test_an_auditor_filters_and_verifies_the_search_log_and_reads_the_transparency_report(
        console_server, keys, open_page, axe, screenshots):
    base = console_server.endpoint_url
    # Something to find: an operator listing collections (allowed) and trying to create one (denied).
    operator = console_server.client(access_key_id=keys["operator"][0], secret_access_key=keys["operator"][1])
    operator.list_collections()
    with pytest.raises(operator.exceptions.AccessDeniedException):
        operator.create_collection(CollectionId="console-by-operator")

    page = open_page()
    sign_in(page, base, keys["auditor"])
    go(page, "Search log")
    rows = page.locator("table.log tbody tr.entry")
    assert rows.count() >= 2  # at least those two (key changes by the CLI are records too, when it logs them)
    seqs = [int(s) for s in page.locator("table.log tbody th").all_inner_texts()]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    look(page, axe, screenshots, "log")

    page.get_by_label("Key name").fill("console-operator")
    page.get_by_label("Outcome").select_option("denied")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/console/log?*key=console-operator*")
    rows = page.locator("table.log tbody tr.entry")
    assert rows.count() >= 1
    for text in rows.all_inner_texts():
        assert "console-operator (operator)" in text and "denied: AccessDeniedException" in text
    assert "CreateCollection" in rows.first.inner_text()
    first_stored = page.locator("table.log tbody tr.stored").first
    first_stored.locator("summary").click()  # the record as stored, exactly what the chain hashes
    stored = json.loads(first_stored.locator("pre.record").inner_text())
    assert stored["error"] == "AccessDeniedException" and stored["key"]["name"] == "console-operator"
    look(page, axe, screenshots, "log-filtered")
    page.get_by_label("Outcome").select_option("allowed")
    page.get_by_role("button", name="Filter").click()
    assert all("allowed (200)" in t for t in page.locator("table.log tbody tr.entry").all_inner_texts())
    page.get_by_label("From (UTC)").fill("2999-01-01")
    page.get_by_role("button", name="Filter").click()
    assert page.locator("table.log").count() == 0 and "No record matches" in page.locator(".notice").inner_text()
    bad = page.goto(base + "/console/log?since=yesterday")
    assert bad.status == 400 and "not an ISO-8601" in page.locator("#log-error").inner_text()

    # Verify the chain, keep the latest checkpoint, verify against it; a checkpoint that is not one is refused.
    go(page, "Search log")
    page.get_by_role("button", name="Verify chain").click()
    page.wait_for_selector("#verdict-h")
    assert page.locator("#verdict-h").inner_text() == "The log verifies"
    assert int(page.locator("#verified-records").inner_text()) >= seqs[0]
    checkpoint = json.loads(page.locator("#latest-checkpoint").inner_text())
    assert checkpoint["statement"]["seq"] >= 1 and checkpoint["public_key"]
    look(page, axe, screenshots, "log-verify")
    kept = page.request.get(base + "/console/log/checkpoint.json")
    assert kept.status == 200 and "attachment" in kept.headers["content-disposition"]
    page.get_by_label("Checkpoint (its JSON; empty: verify the chain and its own checkpoints)").fill(kept.text())
    page.get_by_role("button", name="Verify chain").click()
    assert "the checkpoint you kept is a prefix of this log" in page.locator(".verdict").inner_text()
    page.get_by_label("Checkpoint (its JSON; empty: verify the chain and its own checkpoints)").fill('{"seq": 1}')
    page.get_by_role("button", name="Verify chain").click()
    assert "not a faceaudit search log checkpoint" in page.locator("#verify-error").inner_text()

    # Someone hides the denial by editing its stored record: the page says the log does not verify, and where.
    db = sqlite3.connect(console_server.data_dir / "searchlog.db", timeout=30)
    try:
        original = db.execute("SELECT record FROM searchlog_records WHERE seq = ?", (stored["seq"],)).fetchone()[0]
        with db:
            db.execute("UPDATE searchlog_records SET record = ? WHERE seq = ?",
                       (original.replace('"error":"AccessDeniedException"', '"error":null'), stored["seq"]))
        page.get_by_label("Checkpoint (its JSON; empty: verify the chain and its own checkpoints)").fill("")
        page.get_by_role("button", name="Verify chain").click()
        assert page.locator("#verdict-h").inner_text() == "The log does NOT verify"
        problem = page.locator(".verdict tbody tr").first
        assert problem.locator("th").inner_text() == str(stored["seq"]) and "edited" in problem.inner_text()
        look(page, axe, screenshots, "log-verify-broken")
    finally:
        with db:
            db.execute("UPDATE searchlog_records SET record = ? WHERE seq = ?", (original, stored["seq"]))
        db.close()

    # The transparency report, drawn by the report's own renderer, and its JSON.
    go(page, "Transparency")
    assert page.locator("h1").first.inner_text().startswith("Searches since ")
    assert "The log verified" in page.locator("main").inner_text()
    assert page.locator("main svg").count() >= 1
    look(page, axe, screenshots, "transparency")
    report = page.request.get(base + page.get_by_role("link", name="transparency.json").get_attribute("href"))
    assert report.status == 200
    figures = json.loads(report.text())
    shown = page.locator("main").inner_text()
    assert f"{figures['searches']['total']} searches" in shown
    # The log is named by its id and signing key; where the server keeps it is not shown nor sent.
    assert figures["source"]["log_id"] in shown and figures["source"]["public_key"] in shown
    data_dir = str(console_server.data_dir.resolve())
    assert data_dir not in page.content() and data_dir not in report.text()
    assert page.goto(base + "/console/transparency?since=soon").status == 400
    assert "not an ISO-8601" in page.locator("#period-error").inner_text()
    check_accessibility(page, axe)

    # Reviewers and operators read none of it; the form's post is refused too.
    for role in ("reviewer", "operator"):
        other = open_page()
        sign_in(other, base, keys[role])
        nav = other.get_by_role("navigation", name="Console").inner_text()
        assert "Search log" not in nav and "Transparency" not in nav
        for path in ("/console/log", "/console/transparency", "/console/log/checkpoint.json",
                     "/console/transparency/transparency.json"):
            assert other.goto(base + path).status == 403, (role, path)
        other.goto(base + "/console/")
        assert other.request.post(base + "/console/log/verify", form={"csrf": csrf_of(other)}).status == 403


def _hold_searches(data_dir: Path, access_key_id: str, count: int, *, case: str, candidates: int = 0) -> list[str]:
    """``count`` searches by the key ``access_key_id`` held for review, opened as the guard opens them
    (faceaudit.accountability.review on the server's data directory); returns their item ids, oldest first."""
    from datetime import UTC, datetime

    from faceaudit.access import SQLiteKeyStore
    from faceaudit.accountability.context import CASE_HEADER, PURPOSE_HEADER, Caller, Facts
    from faceaudit.accountability.review import ReviewStore

    with SQLiteKeyStore(data_dir) as store:
        key = store.lookup(access_key_id).key
    probe = Image.new("RGB", (96, 96), (120, 90, 60))
    buffer = io.BytesIO()
    probe.save(buffer, format="JPEG")
    response = {"FaceMatches": [{"Similarity": 99.5 - n / 10, "Face": {"FaceId": str(uuid.uuid4())}}
                                for n in range(candidates)]}
    with ReviewStore(data_dir) as review:
        return [review.open_item(Caller(key, str(uuid.uuid4()), datetime.now(UTC),
                                        {PURPOSE_HEADER: "held list test", CASE_HEADER: case}),
                                 "console-held", "public-safety", buffer.getvalue(), response,
                                 Facts(operation="SearchFacesByImage")) for _ in range(count)]


def test_an_operator_lists_its_own_held_searches_newest_first_and_opens_one(
        console_server, keys, open_page, axe, screenshots):
    base = console_server.endpoint_url
    data_dir = console_server.data_dir
    closed = _hold_searches(data_dir, keys["operator"][0], 50, case="HL-closed")  # no candidate: closed at once
    held = _hold_searches(data_dir, keys["operator"][0], 1, case="HL-open", candidates=2)[0]
    _hold_searches(data_dir, keys["admin"][0], 1, case="HL-someone-else", candidates=1)

    operator = open_page()
    sign_in(operator, base, keys["operator"])
    go(operator, "Review results")
    rows = operator.locator("table.held tbody tr")
    assert rows.count() == 50  # a page
    cells = rows.first.locator("th, td").all_inner_texts()
    assert " ".join(cells[0].split()) == f"Result of item {held[:8]}" and cells[1] == "open" and cells[3:] == [
        "console-held", "held list test", "HL-open", "0 of 2"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", cells[2])
    assert [r.locator("td.state").inner_text() for r in rows.all()[1:]] == ["not confirmed"] * 49
    page_text = operator.locator("main").inner_text()
    assert "HL-someone-else" not in page_text  # another key's search
    assert "99.5" not in page_text and "Candidates" not in page_text  # nothing of the candidates
    look(operator, axe, screenshots, "review-results-list")

    shown = [re.search(r"/results/([0-9a-f-]{36})", href).group(1)
             for href in rows.locator("th a").evaluate_all("links => links.map(a => a.href)")]
    with operator.expect_navigation():
        operator.get_by_role("link", name="More items").click()
    shown += [re.search(r"/results/([0-9a-f-]{36})", href).group(1)
              for href in operator.locator("table.held tbody th a").evaluate_all("links => links.map(a => a.href)")]
    assert shown[:51] == [held, *closed[::-1]] and len(shown) == len(set(shown))  # newest first, each once
    check_accessibility(operator, axe)

    operator.goto(base + "/console/results")
    with operator.expect_navigation():
        operator.get_by_role("link", name=f"Result of item {held[:8]}").click()
    assert operator.url == base + f"/console/results/{held}"
    assert "Pending review: 0 of 2" in operator.locator("#pending").inner_text()

    # The admin (who searches too) sees its own, not the operator's.
    admin = open_page()
    sign_in(admin, base, keys["admin"])
    go(admin, "Review results")
    listed = admin.locator("table.held tbody").inner_text()
    assert "HL-someone-else" in listed and "HL-open" not in listed and "HL-closed" not in listed
