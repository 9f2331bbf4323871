# Deploying to a kind cluster with Knative (docs/deploy.md). Included by the Makefile.
PYTHON ?= .venv/bin/python

.PHONY: kind-up kind-down deploy validate-manifests topics-job kafka-access images images-stop test-images

kind-up:  ## create the kind cluster, install Knative + the Kafka source/sink, deploy minimart
	bash scripts/kind-up.sh

kind-down:  ## delete the kind cluster and its volumes
	bash scripts/kind-down.sh

deploy:  ## rebuild the images, redeploy to the kind cluster of `make kind-up`, wait until Ready
	bash scripts/kind-up.sh deploy

validate-manifests:  ## validate k8s/, eventing/, skaffold.yaml, kind-config.yaml offline (Knative's own code included; needs Go)
	$(PYTHON) -m pytest tests/deploy -q

topics-job:  ## rename the Job of k8s/jobs/create-topics.yaml after its spec, eventing/topics.yaml and the Kafka ACLs (run after changing any)
	$(PYTHON) scripts/name_topics_job.py

kafka-access:  ## render the Kafka principals and ACLs from the manifests (k8s/jobs/kafka-access.yaml, the Job's password volume), then rename the Job
	$(PYTHON) scripts/render_kafka_access.py
	$(PYTHON) scripts/name_topics_job.py

images:  ## build every function's image here: own dockerd (no bridge, no iptables), debootstrap base, Dockerfile
	bash scripts/images.sh build

images-stop:  ## remove the containers and stop the dockerd of `make images`
	bash scripts/images.sh stop

test-images:  ## an order through the images run with their pods' security settings, against the local stack (slow)
	$(PYTHON) -m pytest tests/e2e/test_images.py -m slow -q
