# minimart: the targets a user runs, and the same commands CI runs (.ci/run calls `make test`).
SHELL := /bin/bash
PYTHON := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: install demo up dev down status order test test-unit test-integration test-e2e lint typecheck check-all

install:  ## install what is missing: Debian packages, the Python venv, the Kafka jars
	bash scripts/install.sh

demo: install  ## bring the stack up and run one order down each saga path
	$(PYTHON) -m minimart.local demo

up: install  ## start servers, functions and dispatchers on 127.0.0.1 (reuses what runs)
	$(PYTHON) -m minimart.local up

dev: install  ## the stack with every function restarting when its code changes; follows their logs
	$(PYTHON) -m minimart.local dev

down:  ## stop everything `make up` started
	$(PYTHON) -m minimart.local down

status:
	$(PYTHON) -m minimart.local status

order: up  ## place one order and follow it to its final state
	$(PYTHON) -m minimart.local order

test: install lint typecheck  ## the default suite: unit, deploy checks, integration, end-to-end
	$(PYTHON) -m pytest -m "not slow" -q

test-unit:
	$(PYTHON) -m pytest tests/unit -q

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

typecheck:
	$(PYTHON) -m mypy minimart

-include mk/*.mk
