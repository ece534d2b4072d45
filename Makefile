# Everything a fresh machine needs: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job: the Rekognition-compatible service on embedded storage in ./data.
# ARGS overrides what it runs, e.g. make run ARGS="detect photo.jpg --pretty".
ARGS ?= serve --host 127.0.0.1 --port 8000 --data-dir data
run: install
	$(BIN)/faceaudit $(ARGS)

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/faces_dev_accuracy.py
	$(BIN)/python benchmarks/search_latency.py

clean:
	rm -rf $(VENV) build src/*.egg-info
