# Reliability: the invariants checker and the fault-injection suite (docs/reliability.md).
PYTHON ?= .venv/bin/python
CHECK_ARGS ?=

.PHONY: check reliability

check:  ## check the books of everything in the running stack (orders, stock, money, ...)
	$(PYTHON) -m minimart.local check --wait 30 $(CHECK_ARGS)

reliability: up  ## every fault scenario (slow ones too) on the running stack, then the books of the whole run
	$(PYTHON) -m pytest tests/reliability -q -p no:randomly --durations=0
	$(PYTHON) -m minimart.local check --wait 60 --allow-dead-letter-prefix poison- $(CHECK_ARGS)
