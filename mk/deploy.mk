# Deploying to a kind cluster with Knative (docs/deploy.md). Included by the Makefile.
PYTHON ?= .venv/bin/python

.PHONY: kind-up kind-down deploy validate-manifests

kind-up:  ## create the kind cluster, install Knative + the Kafka source/sink, deploy minimart
	bash scripts/kind-up.sh

kind-down:  ## delete the kind cluster and its volumes
	bash scripts/kind-down.sh

deploy:  ## rebuild the images and redeploy to the kind cluster made by `make kind-up`
	skaffold run -p local-kind --default-repo=kind.local --kube-context kind-minimart

validate-manifests:  ## validate k8s/, eventing/, skaffold.yaml, kind-config.yaml offline
	$(PYTHON) -m pytest tests/deploy -q
