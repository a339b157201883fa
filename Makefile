PY ?= .venv/bin/python

.PHONY: setup test test-all lint format bench train

setup:
	python3 dev.py setup

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

lint: setup
	$(PY) -m ruff check dltrain tests benchmarks
	$(PY) -m ruff format --check dltrain tests benchmarks
	$(PY) -m mypy dltrain

format: setup
	$(PY) -m ruff format dltrain tests benchmarks

bench: setup
	$(PY) benchmarks/vs_pytorch.py

train:
	python3 dev.py train
