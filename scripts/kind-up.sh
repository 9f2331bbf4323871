#!/usr/bin/env bash
# Create the kind cluster "minimart", install Knative Serving + Kourier, Knative Eventing and
# the Kafka source/sink (eventing-kafka-broker) at pinned versions, point the order function
# at http://localhost:8080, apply the observability stack (k8s/observability: collector,
# Jaeger, Prometheus, Grafana), then build and deploy minimart with skaffold.
# Needs: docker (running), kind, kubectl, skaffold. Re-running it is safe (everything is
# applied idempotently; an existing cluster is reused). See docs/deploy.md.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER_NAME="${CLUSTER_NAME:-minimart}"
CONTEXT="kind-${CLUSTER_NAME}"
# One Knative release line for every component; bump them together.
KNATIVE_SERVING_VERSION="${KNATIVE_SERVING_VERSION:-knative-v1.16.0}"
KNATIVE_KOURIER_VERSION="${KNATIVE_KOURIER_VERSION:-knative-v1.16.0}"
KNATIVE_EVENTING_VERSION="${KNATIVE_EVENTING_VERSION:-knative-v1.16.0}"
KNATIVE_KAFKA_VERSION="${KNATIVE_KAFKA_VERSION:-knative-v1.16.0}"

SERVING="https://github.com/knative/serving/releases/download/${KNATIVE_SERVING_VERSION}"
KOURIER="https://github.com/knative/net-kourier/releases/download/${KNATIVE_KOURIER_VERSION}"
EVENTING="https://github.com/knative/eventing/releases/download/${KNATIVE_EVENTING_VERSION}"
KAFKA="https://github.com/knative-extensions/eventing-kafka-broker/releases/download/${KNATIVE_KAFKA_VERSION}"

log() { printf '\n==> %s\n' "$*"; }
for tool in docker kind kubectl skaffold; do
  command -v "$tool" >/dev/null || { echo "kind-up: '$tool' is not installed" >&2; exit 1; }
done
k() { kubectl --context "$CONTEXT" "$@"; }
wait_deployments() { k wait deployment --all --namespace "$1" --for=condition=Available --timeout=600s; }

if kind get clusters | grep -qx "$CLUSTER_NAME"; then
  log "kind cluster $CLUSTER_NAME exists: reusing it"
else
  log "creating kind cluster $CLUSTER_NAME (kind-config.yaml)"
  kind create cluster --name "$CLUSTER_NAME" --config kind-config.yaml --wait 120s
fi

log "Knative Serving $KNATIVE_SERVING_VERSION + Kourier $KNATIVE_KOURIER_VERSION"
k apply -f "$SERVING/serving-crds.yaml"
k wait crd --all --for=condition=Established --timeout=120s
k apply -f "$SERVING/serving-core.yaml"
k apply -f "$KOURIER/kourier.yaml"
wait_deployments knative-serving
wait_deployments kourier-system
# Kourier as the ingress; the order Service (annotation minimart.dev/host: localhost) gets the
# host `localhost`, every other public Service <name>.<namespace>.127.0.0.1.sslip.io.
k patch configmap/config-network --namespace knative-serving --type merge --patch '{"data":{
  "ingress-class":"kourier.ingress.networking.knative.dev",
  "domain-template":"{{if index .Annotations \"minimart.dev/host\"}}{{index .Annotations \"minimart.dev/host\"}}{{else}}{{.Name}}.{{.Namespace}}.{{.Domain}}{{end}}"}}'
k patch configmap/config-domain --namespace knative-serving --type merge \
  --patch '{"data":{"127.0.0.1.sslip.io":""}}'
# Pod-spec features the minimart Services use (k8s/functions/*.yaml: an emptyDir for /tmp),
# and seccomp RuntimeDefault on Knative's queue-proxy sidecar too.
k patch configmap/config-features --namespace knative-serving --type merge --patch '{"data":{
  "kubernetes.podspec-volumes-emptydir":"enabled",
  "secure-pod-defaults":"enabled"}}'
# Kourier's HTTP port on NodePort 31080, which kind-config.yaml publishes on 127.0.0.1:8080.
k patch service/kourier --namespace kourier-system --type merge --patch '{"spec":{
  "type":"NodePort",
  "ports":[{"name":"http2","port":80,"protocol":"TCP","targetPort":8080,"nodePort":31080},
           {"name":"https","port":443,"protocol":"TCP","targetPort":8443,"nodePort":31443}]}}'

log "Knative Eventing $KNATIVE_EVENTING_VERSION"
k apply -f "$EVENTING/eventing-crds.yaml"
k wait crd --all --for=condition=Established --timeout=120s
k apply -f "$EVENTING/eventing-core.yaml"
wait_deployments knative-eventing
# The KafkaSources' delivery blocks set a per-attempt timeout.
k patch configmap/config-features --namespace knative-eventing --type merge \
  --patch '{"data":{"delivery-timeout":"enabled"}}'

log "Kafka source and sink (eventing-kafka-broker $KNATIVE_KAFKA_VERSION)"
k apply -f "$KAFKA/eventing-kafka-controller.yaml"
k wait crd --all --for=condition=Established --timeout=120s
k apply -f "$KAFKA/eventing-kafka-source.yaml"
k apply -f "$KAFKA/eventing-kafka-sink.yaml"
wait_deployments knative-eventing

# Its own kustomization and namespace (not in skaffold's `k8s`, whose namespace is minimart).
# Applied first so the collector is there for the functions' first spans
# (OTEL_EXPORTER_OTLP_ENDPOINT in k8s/config/minimart-config.yaml).
log "observability: OpenTelemetry collector, Jaeger, Prometheus, Grafana (k8s/observability)"
k apply -k k8s/observability

log "building and deploying minimart (skaffold run -p local-kind)"
kubectl config use-context "$CONTEXT" >/dev/null
skaffold run -p local-kind --default-repo=kind.local --kube-context "$CONTEXT"

wait_deployments observability

log "minimart is up: http://localhost:8080/orders"
k get ksvc --namespace minimart
cat <<'EOF'

Grafana, Jaeger and Prometheus (docs/deploy.md), each in a terminal of its own:
  kubectl -n observability port-forward --address 127.0.0.1 svc/grafana 3000:3000       # http://127.0.0.1:3000
  kubectl -n observability port-forward --address 127.0.0.1 svc/jaeger 16686:16686      # http://127.0.0.1:16686
  kubectl -n observability port-forward --address 127.0.0.1 svc/prometheus 9090:9090    # http://127.0.0.1:9090
EOF
