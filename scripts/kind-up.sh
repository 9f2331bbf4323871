#!/usr/bin/env bash
# Create the kind cluster "minimart" (kind-config.yaml: one node, a pinned node image), install
# Knative Serving + Kourier, Knative Eventing and the Kafka source/sink (eventing-kafka-broker)
# at pinned releases, configure them from k8s/knative/, apply the observability stack
# (k8s/observability: collector, Jaeger, Prometheus, Grafana), the Secrets (minimart-secrets, one
# kafka-<principal> per Kafka principal) and the stores (k8s/infra), build
# and deploy minimart with skaffold, then wait until the order Service, its Route, the dead-letter KafkaSink and every
# KafkaSource are Ready and print how to reach the order ingress.
#   bash scripts/kind-up.sh          everything (re-running it is safe: all is applied
#                                    idempotently and an existing cluster is reused)
#   bash scripts/kind-up.sh deploy   only rebuild, redeploy and wait (`make deploy`)
# Needs: docker (running), kind, kubectl, skaffold >= 2.19. See docs/deploy.md.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER_NAME="${CLUSTER_NAME:-minimart}"
CONTEXT="kind-${CLUSTER_NAME}"
# knative-v1.23.0 of each component: the newest line whose parts all exist at one version and
# whose Go modules the module proxy serves (tests/knative-check runs that exact release);
# docs/deploy.md says why. Bump them together, with tests/knative-check/go.mod.
KNATIVE_SERVING_VERSION="${KNATIVE_SERVING_VERSION:-knative-v1.23.0}"
KNATIVE_KOURIER_VERSION="${KNATIVE_KOURIER_VERSION:-knative-v1.23.0}"
KNATIVE_EVENTING_VERSION="${KNATIVE_EVENTING_VERSION:-knative-v1.23.0}"
KNATIVE_KAFKA_VERSION="${KNATIVE_KAFKA_VERSION:-knative-v1.23.0}"
# skaffold.yaml's apiVersion skaffold/v4beta14 is read by skaffold 2.19 and later only.
SKAFFOLD_MINIMUM="2.19"
KIND_RELEASE="0.31"
# Kourier's HTTP port as kind-config.yaml publishes it on the host.
INGRESS="http://127.0.0.1:8080"

SERVING="https://github.com/knative/serving/releases/download/${KNATIVE_SERVING_VERSION}"
KOURIER="https://github.com/knative-extensions/net-kourier/releases/download/${KNATIVE_KOURIER_VERSION}"
EVENTING="https://github.com/knative/eventing/releases/download/${KNATIVE_EVENTING_VERSION}"
KAFKA="https://github.com/knative-extensions/eventing-kafka-broker/releases/download/${KNATIVE_KAFKA_VERSION}"

log() { printf '\n==> %s\n' "$*"; }
die() { echo "kind-up: $*" >&2; exit 1; }
k() { kubectl --context "$CONTEXT" "$@"; }
wait_deployments() { k wait deployment --all --namespace "$1" --for=condition=Available --timeout=600s; }
# Merge the data of each ConfigMap file of k8s/knative/ into the release's ConfigMap of that
# name (the release's other keys stay); tests/knative-check validates the same files.
configure() { for file in "$@"; do k patch -f "$file" --type merge --patch-file "$file"; done; }

check_tools() {
  for tool in docker kind kubectl skaffold; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed"
  done
  local version major minor
  version="$(skaffold version)"
  IFS=. read -r major minor _ <<<"${version#v}"
  if (( major < 2 || (major == 2 && minor < ${SKAFFOLD_MINIMUM#2.}) )); then
    die "skaffold $version cannot read skaffold.yaml (skaffold/v4beta14): install skaffold >= $SKAFFOLD_MINIMUM"
  fi
  # kind-config.yaml's node image is built for this kind release: an older kind may not run a
  # Kubernetes 1.35 node at all; a newer one runs it on a best-effort basis (kind's release
  # notes), so it is only told.
  local kind_version kind_minor
  kind_version="$(kind version | awk '{print $2}')"
  IFS=. read -r _ kind_minor _ <<<"${kind_version#v}"
  if (( kind_minor < ${KIND_RELEASE#0.} )); then
    die "kind $kind_version is older than v${KIND_RELEASE}, the release the node image of kind-config.yaml is built for: install kind v${KIND_RELEASE}.0 or later"
  elif (( kind_minor > ${KIND_RELEASE#0.} )); then
    echo "kind-up: note: kind $kind_version runs the node image of kind v${KIND_RELEASE} (kind-config.yaml) on a best-effort basis" >&2
  fi
}

create_cluster() {
  if kind get clusters | grep -qx "$CLUSTER_NAME"; then
    log "kind cluster $CLUSTER_NAME exists: reusing it"
  else
    log "creating kind cluster $CLUSTER_NAME (kind-config.yaml)"
    kind create cluster --name "$CLUSTER_NAME" --config kind-config.yaml --wait 120s
  fi
}

install_knative() {
  log "Knative Serving $KNATIVE_SERVING_VERSION + Kourier $KNATIVE_KOURIER_VERSION"
  k apply -f "$SERVING/serving-crds.yaml"
  k wait crd --all --for=condition=Established --timeout=120s
  k apply -f "$SERVING/serving-core.yaml"
  k apply -f "$KOURIER/kourier.yaml"
  wait_deployments knative-serving
  wait_deployments kourier-system
  # Kourier as the ingress, the domain localhost, the pod-spec features the Services use.
  configure k8s/knative/serving-*.yaml
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
  # The feature flags the KafkaSources' delivery blocks need.
  configure k8s/knative/eventing-*.yaml

  log "Kafka source and sink (eventing-kafka-broker $KNATIVE_KAFKA_VERSION)"
  k apply -f "$KAFKA/eventing-kafka-controller.yaml"
  k wait crd --all --for=condition=Established --timeout=120s
  k apply -f "$KAFKA/eventing-kafka-source.yaml"
  k apply -f "$KAFKA/eventing-kafka-sink.yaml"
  wait_deployments knative-eventing
}

install_observability() {
  # Its own kustomization and namespace (not in skaffold's `k8s`, whose namespace is minimart).
  # Applied before minimart so the collector is there for the functions' first spans
  # (OTEL_EXPORTER_OTLP_ENDPOINT in k8s/config/minimart-config.yaml).
  log "observability: OpenTelemetry collector, Jaeger, Prometheus, Grafana (k8s/observability)"
  k apply -k k8s/observability
}

# The keys of the Secret minimart-secrets: the stores' administrators (the operator's) and one
# credential per store role a function logs in with (docs/security-lockdown.md). Every key a
# manifest reads from the Secret is here (tests/deploy/test_secrets.py).
SECRET_KEYS=(
  POSTGRES_PASSWORD
  MINIMART_ORDERS_DB_PASSWORD
  MINIMART_INVENTORY_DB_PASSWORD
  MINIMART_PAYMENTS_DB_PASSWORD
  MONGO_ROOT_PASSWORD
  MINIMART_SHIPPING_MONGO_PASSWORD
  REDIS_PASSWORD
)

# KEY=<48 random hex digits> per key: nothing to quote in a URL, a shell or SQL.
random_secrets() {
  local key
  for key in "${SECRET_KEYS[@]}"; do
    printf '%s=%s\n' "$key" "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
  done
}

# The Secret minimart-secrets, generated in the cluster the first time and kept after that: the
# stores take their passwords from it on their first start only (an empty volume), so a new
# password under a running database would lock the functions out. The values go from a pipe
# to kubectl: never on disk, never on a command line.
create_secrets() {
  local present missing=() key
  present="$(k get secret minimart-secrets --namespace minimart --ignore-not-found \
    -o go-template='{{range $key, $value := .data}}{{$key}} {{end}}')"
  if [[ -z "$present" ]]; then
    log "generating the Secret minimart-secrets (random passwords, kept in the cluster only)"
    k create secret generic minimart-secrets --namespace minimart \
      --from-env-file=<(random_secrets) --dry-run=client -o yaml |
      k label --local -f - app.kubernetes.io/part-of=minimart -o yaml |
      k apply -f -
    return
  fi
  for key in "${SECRET_KEYS[@]}"; do
    [[ " $present " == *" $key "* ]] || missing+=("$key")
  done
  if (( ${#missing[@]} )); then
    die "the Secret minimart-secrets has no ${missing[*]}: it predates the per-database roles and its stores were initialised without them; start anew with 'make kind-down' then 'make kind-up' (docs/security-lockdown.md)"
  fi
  log "the Secret minimart-secrets exists: keeping it (the stores were initialised with it)"
}

# The Kafka principals of the manifests, one "<principal> <Secret> <mechanism> <reader>" per line:
# the `principals` of ConfigMap kafka-access (k8s/jobs/kafka-access.yaml, rendered from the
# manifests by scripts/render_kafka_access.py; tests/deploy fail on a stale copy).
KAFKA_ACCESS=k8s/jobs/kafka-access.yaml
kafka_principals() {
  awk '/^  principals: [|]$/ { on = 1; next } on && /^    / { sub(/^ +/, ""); print; next } { on = 0 }' \
    "$KAFKA_ACCESS"
}

# The keys Knative's KafkaSink `auth` and KafkaSource `net.sasl` read (eventing-kafka-broker
# control-plane/pkg/security/secret.go): the principal, a random password, how it logs in.
kafka_secret() {
  printf 'user=%s\npassword=%s\nsasl.mechanism=%s\nprotocol=SASL_PLAINTEXT\n' \
    "$1" "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" "$2"
}

# One Secret kafka-<principal> per Kafka principal, made the first time and kept after that,
# like minimart-secrets. A Secret deleted to rotate its password is made anew here; then the
# Job create-topics, which sets the SCRAM credentials, is deleted so the deploy runs it again,
# and what reads the Secret at start is restarted after the deploy (restart_kafka_readers).
ROTATED_READERS=()
create_kafka_secrets() {
  local present principal secret mechanism reader made=0 kept=0 readers=()
  present=" $(k get secrets --namespace minimart -o go-template='{{range .items}}{{.metadata.name}} {{end}}') "
  while read -r principal secret mechanism reader; do
    if [[ "$present" == *" $secret "* ]]; then
      kept=$((kept + 1))
      continue
    fi
    k create secret generic "$secret" --namespace minimart \
      --from-env-file=<(kafka_secret "$principal" "$mechanism") --dry-run=client -o yaml |
      k label --local -f - app.kubernetes.io/part-of=minimart \
        app.kubernetes.io/component=kafka-credentials -o yaml |
      k apply -f -
    made=$((made + 1))
    readers+=("$reader")
  done < <(kafka_principals)
  (( made + kept )) || die "no Kafka principals in $KAFKA_ACCESS: make kafka-access"
  log "Kafka credentials: $made Secret(s) made, $kept kept (k8s/jobs/kafka-access.yaml)"
  if (( made && kept )); then
    log "new Kafka password(s): the Job create-topics runs again to set them"
    k delete job --namespace minimart -l app.kubernetes.io/name=create-topics --ignore-not-found
    ROTATED_READERS=("${readers[@]}")
  fi
}

# After a rotation: the broker reads the administrator's password, a function its own, at start
# only. KafkaSources and KafkaSinks need nothing: Knative's controller tracks their Secrets.
restart_kafka_readers() {
  local reader
  # (${a[@]+...}: an empty array under `set -u` in bash 3.2 too)
  for reader in ${ROTATED_READERS[@]+"${ROTATED_READERS[@]}"}; do
    case "$reader" in
      statefulset/*) k rollout restart "$reader" --namespace minimart ;;
      ksvc/*) k delete pod --namespace minimart -l "serving.knative.dev/service=${reader#ksvc/}" ;;
    esac
  done
}

# The namespace, the stores (Kafka, PostgreSQL, MongoDB, Redis) and their NetworkPolicies:
# applied here, never by skaffold, so a redeploy does not restart them and the end of `skaffold
# dev` does not delete them (docs/deploy.md, "Redeploys"). Re-applying an unchanged
# kustomization changes nothing. The Secrets come first: the stores read them on their first start.
install_stores() {
  log "namespace minimart, its Secrets, the stores and the NetworkPolicies (k8s/infra)"
  k apply -f k8s/infra/namespace.yaml
  create_secrets
  create_kafka_secrets
  k apply -k k8s/infra
}

deploy_minimart() {
  log "building and deploying minimart (skaffold run -p local-kind)"
  kubectl config use-context "$CONTEXT" >/dev/null
  # The Job that creates the topics is named after its spec and the topics (k8s/jobs/): an
  # unchanged one is left as it is, a changed one is a new Job, so nothing is deleted first.
  skaffold run -p local-kind --default-repo=kind.local --kube-context "$CONTEXT"
}

# skaffold's status check watches Deployments, StatefulSets and standalone Pods only: the
# Knative Services, their Routes and the Kafka resources are waited for here.
wait_minimart() {
  log "waiting for the Knative Services, their Routes, the KafkaSink and the KafkaSources"
  local resource
  for resource in ksvc route kafkasink kafkasource; do
    k wait "$resource" --all --namespace minimart --for=condition=Ready --timeout=600s ||
      die "$resource not Ready: kubectl -n minimart describe $resource (docs/deploy.md, 'When it is not Ready')"
  done
}

print_access() {
  local url host
  url="$(k get ksvc order --namespace minimart -o 'jsonpath={.status.url}')"
  host="${url#*://}"
  log "minimart is up: the order Service is $url, through Kourier on $INGRESS"
  k get ksvc --namespace minimart
  cat <<EOF

The order API from this machine (no DNS needed: the Host header names the Service):
  curl -s -H 'Host: $host' $INGRESS/orders/<orderId>
  .venv/bin/k6 run -e BASE_URL=$INGRESS -e HOST=$host loadtests/checkout_test.js

Grafana, Jaeger and Prometheus (docs/deploy.md), each in a terminal of its own:
  kubectl -n observability port-forward --address 127.0.0.1 svc/grafana 3000:3000       # http://127.0.0.1:3000
  kubectl -n observability port-forward --address 127.0.0.1 svc/jaeger 16686:16686      # http://127.0.0.1:16686
  kubectl -n observability port-forward --address 127.0.0.1 svc/prometheus 9090:9090    # http://127.0.0.1:9090
EOF
}

check_tools
case "${1:-all}" in
  all)
    create_cluster
    install_knative
    install_observability
    install_stores
    deploy_minimart
    restart_kafka_readers
    wait_minimart
    wait_deployments observability
    ;;
  deploy)
    install_stores
    deploy_minimart
    restart_kafka_readers
    wait_minimart
    ;;
  *) die "usage: kind-up.sh [all|deploy]" ;;
esac
print_access
