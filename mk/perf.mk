# Load tests and the benchmark (docs/performance.md). Included by the main Makefile.
PYTHON ?= .venv/bin/python
K6 ?= .venv/bin/k6
BASE_URL ?= http://127.0.0.1:$${MINIMART_INGRESS_PORT:-8080}
K6_ARGS ?=

.PHONY: loadtest bench

loadtest: install  ## bring the local stack up and run the k6 checkout test (~1 min); summary in loadtests/results/
	$(PYTHON) -m minimart.local up
	mkdir -p loadtests/results
	set -o pipefail; $(K6) run --summary-export loadtests/results/summary.json -e BASE_URL=$(BASE_URL) $(K6_ARGS) \
		loadtests/checkout_test.js | tee loadtests/results/summary.txt

bench: install  ## the saga benchmark on the local stack (~5 min): bench/results.json and bench/results.png
	$(PYTHON) -m bench $(BENCH_ARGS)
