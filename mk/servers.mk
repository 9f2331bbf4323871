# Targets for the local stack's servers (included by the main Makefile).
PYTHON ?= .venv/bin/python
SERVERS ?=

.PHONY: servers-up servers-down servers-status servers-install test-servers

servers-install: ## install system packages, the venv and the Kafka jars
	scripts/install.sh

servers-up: ## start postgres, redis, mongo, kafka (or SERVERS="...")
	$(PYTHON) -m minimart.local.servers up $(SERVERS)

servers-down: ## stop the local stack's servers
	$(PYTHON) -m minimart.local.servers down $(SERVERS)

servers-status:
	$(PYTHON) -m minimart.local.servers status $(SERVERS)

test-servers: ## the servers' integration tests (private ports and state dir)
	$(PYTHON) -m pytest -q tests/integration/test_servers.py
