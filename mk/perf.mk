# Load tests and the benchmark (docs/performance.md). Included by the main Makefile.
PYTHON ?= .venv/bin/python
K6 ?= .venv/bin/k6
BASE_URL ?= http://127.0.0.1:$${MINIMART_INGRESS_PORT:-8080}
K6_ARGS ?=
AB_ARGS ?=

.PHONY: loadtest bench bench-ab

loadtest: install  ## the k6 checkout test (~1.5 min) at a peak derived from the capacity measured first; loadtests/results/
	$(PYTHON) -m bench.loadtest --k6 $(K6) --base-url $(BASE_URL) -- $(K6_ARGS)

bench: install  ## the saga benchmark on the local stack (~5 min): bench/results.json and bench/results.png
	$(PYTHON) -m bench $(BENCH_ARGS)

bench-ab: install  ## BASE=<git rev>: that tree against this one, side by side, as ratios (~15 min): bench/ab.json; AB_ARGS="--head-env MINIMART_KAFKA_CLIENT=librdkafka" sets the working tree's stack only
	@test -n "$(BASE)" || { echo "usage: make bench-ab BASE=<git revision>"; exit 2; }
	$(PYTHON) -m bench.ab --base $(BASE) $(AB_ARGS)
