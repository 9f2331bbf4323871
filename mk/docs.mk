# Pictures drawn from the manifests (docs/architecture.md). Included by the Makefile.
PYTHON ?= .venv/bin/python

.PHONY: topology

topology:  ## redraw docs/topology.dot and docs/topology.png from eventing/ and k8s/ (Graphviz)
	$(PYTHON) -m minimart.topology
