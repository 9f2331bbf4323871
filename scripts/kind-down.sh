#!/usr/bin/env bash
# Delete the kind cluster scripts/kind-up.sh created (with all its data volumes).
set -euo pipefail
CLUSTER_NAME="${CLUSTER_NAME:-minimart}"
command -v kind >/dev/null || { echo "kind-down: 'kind' is not installed" >&2; exit 1; }
if kind get clusters | grep -qx "$CLUSTER_NAME"; then
  kind delete cluster --name "$CLUSTER_NAME"
else
  echo "no kind cluster named $CLUSTER_NAME"
fi
