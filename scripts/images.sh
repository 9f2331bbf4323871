#!/usr/bin/env bash
# minimart's images built and run on this machine, with no registry (docs/deploy.md, "The images,
# built here"). Every packet stays on 127.0.0.1: dockerd runs with no bridge and no iptables
# rules, and the containers share the host's network (--network host).
#   bash scripts/images.sh engine   install docker.io and debootstrap if missing (apt-get), start
#                                   a dockerd of our own (socket under $IMAGES_DIR)
#   bash scripts/images.sh base     build the stand-in for the Dockerfile's base python:3.11-slim:
#                                   Debian bookworm (Python 3.11) by debootstrap, `docker import`
#   bash scripts/images.sh build    build every function's image from the Dockerfile as skaffold
#                                   does (skaffold.yaml's artifacts: FUNCTION, SIGNATURE)
#   bash scripts/images.sh stop     stop the containers and the dockerd started here
# `make images` runs engine, base and build. Then DOCKER_HOST=unix://$IMAGES_DIR/docker.sock.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGES_DIR="${IMAGES_DIR:-$PWD/.minimart/images}"
SOCKET="$IMAGES_DIR/docker.sock"
export DOCKER_HOST="unix://$SOCKET"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# The Dockerfile's base; the stand-in carries its name so the Dockerfile builds unchanged.
BASE_IMAGE="python:3.11-slim"
SUITE="bookworm"  # Debian 12: Python 3.11, as the base image

log() { printf '==> %s\n' "$*"; }
die() { echo "images: $*" >&2; exit 1; }

engine() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  fi
  mkdir -p "$IMAGES_DIR"
  if docker version >/dev/null 2>&1; then
    log "dockerd answers on $SOCKET"
    return
  fi
  log "starting dockerd (no bridge, no iptables; $IMAGES_DIR)"
  dockerd --host "$DOCKER_HOST" --data-root "$IMAGES_DIR/root" --exec-root "$IMAGES_DIR/exec" \
    --pidfile "$IMAGES_DIR/dockerd.pid" --bridge=none --iptables=false --ip-masq=false \
    --storage-driver overlay2 >"$IMAGES_DIR/dockerd.log" 2>&1 &
  local deadline=$((SECONDS + 60))
  until docker version >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "dockerd did not answer in 60 s: $IMAGES_DIR/dockerd.log"
    sleep 0.5
  done
  log "dockerd $(docker version --format '{{.Server.Version}}') answers"
}

base() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "$BASE_IMAGE exists (the debootstrap stand-in)"
    return
  fi
  local rootfs="$IMAGES_DIR/rootfs"
  if [[ ! -x "$rootfs/usr/bin/python3" ]]; then
    rm -rf "$rootfs"
    log "debootstrap $SUITE (minbase, python3) from $DEBIAN_MIRROR"
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
      "$SUITE" "$rootfs" "$DEBIAN_MIRROR"
    rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
  fi
  # pip in the build stage reaches PyPI through this machine's TLS setup: the host's CA bundle,
  # and pip told to use it (pip otherwise trusts only its own bundle).
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  log "docker import as $BASE_IMAGE"
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
}

# FUNCTION SIGNATURE per artifact of skaffold.yaml.
artifacts() {
  python3 - <<'PY'
import yaml
config = yaml.safe_load(open("skaffold.yaml"))
for artifact in config["build"]["artifacts"]:
    args = artifact["docker"]["buildArgs"]
    print(artifact["image"], args["FUNCTION"], args["SIGNATURE"])
PY
}

build() {
  local image function signature
  while read -r image function signature; do
    log "docker build $image (FUNCTION=$function SIGNATURE=$signature)"
    # The classic builder: BuildKit would fetch the Dockerfile's syntax frontend from a registry.
    DOCKER_BUILDKIT=0 docker build --network host --quiet --tag "$image:local" \
      --build-arg "FUNCTION=$function" --build-arg "SIGNATURE=$signature" . >/dev/null
  done < <(artifacts)
  docker image ls --filter 'reference=minimart-*'
}

stop() {
  if docker version >/dev/null 2>&1; then
    local running
    running="$(docker ps -q --filter 'name=^minimart-')"
    [[ -z "$running" ]] || docker rm -f $running >/dev/null
  fi
  if [[ -f "$IMAGES_DIR/dockerd.pid" ]]; then
    local pid
    pid="$(cat "$IMAGES_DIR/dockerd.pid")"
    kill "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
      ((SECONDS < deadline)) || die "dockerd $pid did not stop"
      sleep 0.5
    done
    log "dockerd stopped"
  fi
}

case "${1:-}" in
  engine) engine ;;
  base) engine; base ;;
  build) engine; base; build ;;
  stop) stop ;;
  *) die "usage: images.sh engine|base|build|stop" ;;
esac
