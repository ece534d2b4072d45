"""A real ``faceaudit serve --reports DIR``, keys of every role, and one headless Chromium for the console tests.

* ``console_server``: the server (module scope) with two audit reports in its reports folder,
  made by the audit CLI from exported predictions (the csv target: no models needed for those);
* ``keys``: role -> (access key id, secret), made with ``faceaudit keys create`` (and "reviewer-2",
  a second reviewer);
* ``reports_dir``: the server's reports folder;
* ``browser``: Debian's chromium driven by Playwright (launched once, for the browser module; Playwright
  downloads no browser here); ``open_page`` gives a fresh context (cookie jar) per use;
* ``axe``: axe-core's axe.min.js from the npm registry, installed by ``make install`` into
  ``$VENV/npm`` (missing: skipped outside CI, a failure under CI=true).

Screenshots go to build/console-screenshots/; docs/console.md shows copies in docs/console/.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from support.server import faceaudit_command, start_server

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "console-screenshots"
AXE = Path(sys.prefix) / "npm" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"
CELLS = [("female", "Black"), ("female", "White"), ("male", "Black"), ("male", "White")]


def _missing(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; CI=true requires it", pytrace=False)
    pytest.skip(message)


def faceaudit(*args: str) -> str:
    result = subprocess.run([*faceaudit_command(), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _start_audits(root: Path) -> tuple[Path, list[subprocess.Popen]]:
    """Two attribute audits of made-up systems known by their predictions (gender wrong for 1 in 12
    White and 4 in 12 Black faces in one; 2 in 12 for everyone in the other), started in the
    background: they run while the server loads its models."""
    data, reports = root / "dataset", root / "reports"
    data.mkdir()
    labels = []
    for gender, race in CELLS:
        for i in range(12):
            name = f"{gender}_{race}_{i:02d}.png"
            Image.new("RGB", (64, 64), (i * 10, 80, 80)).save(data / name)  # pixels are never looked at
            labels.append({"path": name, "gender": gender, "race": race, "age": 25 + i})
    _write_csv(data / "labels.csv", labels)
    running = []
    for system, wrong in (("system-a", {"Black": 4, "White": 1}), ("system-b", {"Black": 2, "White": 2})):
        predictions = []
        for row in labels:
            i = int(row["path"][-6:-4])
            other = "male" if row["gender"] == "female" else "female"
            predictions.append({"path": row["path"], "face_detected": "1", "gender_confidence": "90",
                                "gender": other if i < wrong[row["race"]] else row["gender"],
                                "age": str(row["age"] + 3)})
        _write_csv(root / f"{system}.csv", predictions)
        running.append(subprocess.Popen(
            [*faceaudit_command(), "audit", "attributes", "--data", str(data), "--labels", str(data / "labels.csv"),
             "--target", f"csv:{root / f'{system}.csv'}", "--out", str(reports / system), "--min-cell", "10"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return reports, running


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="session")
def run_faceaudit():
    """``run_faceaudit(*args)`` -> the stdout of the installed ``faceaudit`` command (which must succeed)."""
    return faceaudit


@pytest.fixture(scope="module")
def console_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    reports, audits = _start_audits(root)
    with start_server(root / "data", extra_args=("--reports", str(reports))) as server:
        for audit in audits:
            output, _ = audit.communicate(timeout=300)
            assert audit.returncode == 0, output
        yield server


@pytest.fixture(scope="module")
def keys(console_server) -> dict[str, tuple[str, str]]:
    made = {"admin": (console_server.access_key_id, console_server.secret_access_key)}
    # Two reviewers: public-safety needs two independent decisions before anything is released.
    for name, role in (("operator", "operator"), ("reviewer", "reviewer"), ("reviewer-2", "reviewer"),
                       ("auditor", "auditor")):
        shown = json.loads(faceaudit("keys", "create", "--name", f"console-{name}", "--role", role,
                                     "--data-dir", str(console_server.data_dir)))["AccessKey"]
        made[name] = (shown["AccessKeyId"], shown["SecretAccessKey"])
    return made


@pytest.fixture(scope="module")
def reports_dir(console_server) -> Path:
    """The server's ``--reports`` folder (beside its data directory)."""
    return console_server.data_dir.parent / "reports"


# Module scope, not session: while Playwright's sync API runs, an event loop runs on the main thread,
# and every later test that calls asyncio.run() would fail. All browser tests are in one module,
# so this is still one browser per test run.
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        _missing("chromium not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright not installed (pip install playwright)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def axe() -> str:
    if not AXE.is_file():
        _missing(f"axe-core not found at {AXE} (make install runs npm install axe-core)")
    return AXE.read_text(encoding="utf-8")


@pytest.fixture
def open_page(browser):
    """``open_page()`` -> a page in a new context (its own cookies); every CSP violation it logs is collected
    in ``page.csp_violations``."""
    contexts = []

    def open_() -> object:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(60_000)  # a search runs the face models
        violations: list[str] = []
        page.on("console", lambda message: violations.append(message.text)
                if "Content Security Policy" in message.text else None)
        page.csp_violations = violations
        return page

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS
