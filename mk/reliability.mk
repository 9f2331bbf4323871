# Reliability: the invariants checker and the fault-injection suite (docs/reliability.md).
PYTHON ?= .venv/bin/python
CHECK_ARGS ?=

.PHONY: check reliability soak soak-short fuzz fuzz-edges

check:  ## check the books of everything in the running stack (orders, stock, money, ...)
	$(PYTHON) -m minimart.local check --wait 30 $(CHECK_ARGS)

reliability: up  ## every fault scenario (slow ones too) on the running stack, then the books of the whole run
	$(PYTHON) -m pytest tests/reliability -q -p no:randomly --durations=0
	$(PYTHON) -m minimart.local check --wait 60 --allow-dead-letter-prefix poison- $(CHECK_ARGS)

FUZZ_RECORDS ?= 600

fuzz: up  ## the poison fuzz suite, long: FUZZ_RECORDS bad records onto the saga topics beside real orders
	$(PYTHON) -m pytest tests/reliability/test_poison_fuzz.py -q -p no:randomly --fuzz-records $(FUZZ_RECORDS)

FUZZ_EXAMPLES ?= 1500

fuzz-edges:  ## random bodies at every function and the order API in-process, long (no stack): never a 5xx
	MINIMART_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTHON) -m pytest tests/unit/test_edge_fuzz.py -q -m slow

SOAK_ARGS ?=

soak: up  ## chaos soak (~9 min): 10 orders/s and 2 junk records/s while random processes are SIGKILLed; bench/soak.json + .png
	$(PYTHON) -m bench.soak $(SOAK_ARGS)

soak-short: up  ## the same soak, short (~4 min): 60 s of chaos after a 20 s baseline
	$(PYTHON) -m bench.soak --seconds 60 --baseline 20 --out .minimart/soak-short.json $(SOAK_ARGS)
