#!/usr/bin/env bash
# Installs what the minimart local stack needs on Debian 12, idempotently and quietly:
#   system packages (only the missing ones), the Python venv, the pinned Kafka broker jars.
# A second run takes a few seconds. Works unattended (CI=true, no stdin).
#
# Environment: MINIMART_STATE_DIR (default .minimart) for the Kafka jars,
#              MINIMART_VENV (default .venv), PYTHON (default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export DEBIAN_FRONTEND=noninteractive
VENV="${MINIMART_VENV:-$ROOT/.venv}"
STATE_DIR="${MINIMART_STATE_DIR:-$ROOT/.minimart}"
PYTHON="${PYTHON:-python3}"
PG_BIN=/usr/lib/postgresql/15/bin

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo -n)
else
  SUDO=()
fi

# --- system packages ------------------------------------------------------------------
missing=()
[ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/initdb" ] || missing+=(postgresql-15)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v dot >/dev/null 2>&1 || missing+=(graphviz)  # make topology: docs/topology.png
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v "$PYTHON" >/dev/null 2>&1 || missing+=(python3)
if [ ! -x "$VENV/bin/python" ] && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install them by hand"
  if [ "$(id -u)" -ne 0 ] && [ "${#SUDO[@]}" -eq 0 ]; then
    die "missing ${missing[*]}: run as root or install sudo"
  fi
  say "apt-get install ${missing[*]}"
  # The packages' init scripts would start system-wide postgres/redis/prometheus daemons
  # (prometheus on every interface); the local stack runs its own. Keep them stopped.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"
    created_policy=1
  fi
  cleanup_policy() { if [ "$created_policy" = 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi; }
  trap cleanup_policy EXIT
  "${SUDO[@]}" apt-get -qq update
  "${SUDO[@]}" apt-get -qq install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null >/dev/null
  cleanup_policy
  trap - EXIT
fi

# --- Python environment ---------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ -f requirements-dev.lock ]; then requirements=requirements-dev.lock; else requirements=requirements-dev.in; fi
stamp="$VENV/.minimart-installed"
inputs=("$requirements")
[ -f pyproject.toml ] && inputs+=(pyproject.toml)
digest="$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  say "pip install -r $requirements"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" </dev/null
  if [ -f pyproject.toml ]; then
    say "pip install -e ."
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e . </dev/null
  fi
  printf '%s\n' "$digest" >"$stamp"
fi

# --- Kafka broker jars (pinned in infra/kafka/pom.xml) ---------------------------------
pom=infra/kafka/pom.xml
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
[ -n "$version" ] || die "no <kafka.version> in $pom"
jars="$STATE_DIR/kafka/jars"
if [ ! -f "$jars/kafka_2.13-$version.jar" ]; then
  say "fetching Kafka $version jars into $jars"
  rm -rf "$jars"
  mkdir -p "$jars"
  mvn_log="$(mktemp)"
  if ! mvn -q -B -f "$pom" dependency:copy-dependencies -DoutputDirectory="$jars" \
      </dev/null >"$mvn_log" 2>&1; then
    cat "$mvn_log" >&2
    rm -f "$mvn_log"
    die "mvn could not fetch the Kafka jars"
  fi
  rm -f "$mvn_log"
  [ -f "$jars/kafka_2.13-$version.jar" ] || die "mvn did not fetch kafka_2.13-$version.jar"
fi

say "ok"
