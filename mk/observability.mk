# Observability: an order's trace, Prometheus with the stack, the cluster manifests
# (docs/observability.md). Included by the Makefile.
PYTHON ?= .venv/bin/python
ORDER ?=

.PHONY: trace up-observability prometheus-config observability-manifests test-observability

trace:  ## print the span tree of one order: make trace ORDER=<order id>
	@test -n "$(ORDER)" || { echo "usage: make trace ORDER=<order id>"; exit 2; }
	$(PYTHON) -m minimart.local trace $(ORDER)

up-observability: install  ## the stack and Prometheus scraping every function and dispatcher
	$(PYTHON) -m minimart.local up --with-prometheus

prometheus-config:  ## regenerate observability/prometheus.yml (default ports) from the plan
	$(PYTHON) -m minimart.local.observe

observability-manifests:  ## regenerate k8s/observability/ from observability/
	$(PYTHON) scripts/render_observability_k8s.py

test-observability:
	$(PYTHON) -m pytest tests/observability -q
