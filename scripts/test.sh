#!/usr/bin/env bash
# Everything the test suite needs, from a fresh Debian/Ubuntu machine, then the tests.
#   ./scripts/test.sh [pytest args]        (root, or a user with sudo)
# Installs Mosquitto (real MQTT broker), PostgreSQL (store tests) and Chromium (dashboard test)
# from apt, a virtualenv with the CPU build of torch and edgeloop[host,openvino,dev], starts PostgreSQL,
# runs ruff and mypy, then pytest (everything but tests marked slow; GPU tests skip where no GPU exists), then the
# device tests again on JetPack's Pythons (3.10, 3.12) without torch.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
export DEBIAN_FRONTEND=noninteractive

need=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v chromium >/dev/null || need+=(chromium)
[ -d /usr/lib/postgresql ] || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# PostgreSQL for the store tests: start the cluster, make a user and a database
if [ -z "${EDGELOOP_TEST_POSTGRES_URL:-}" ]; then
  ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
  $SUDO pg_ctlcluster "$ver" main start 2>/dev/null || true
  for _ in $(seq 30); do as_pg pg_isready -q 2>/dev/null && break; sleep 1; done
  as_pg psql -qtc "SELECT 1 FROM pg_roles WHERE rolname='edgeloop'" | grep -q 1 \
    || as_pg psql -qc "CREATE USER edgeloop WITH PASSWORD 'edgeloop' CREATEDB"
  as_pg psql -qtc "SELECT 1 FROM pg_database WHERE datname='edgeloop_test'" | grep -q 1 \
    || as_pg createdb -O edgeloop edgeloop_test
  export EDGELOOP_TEST_POSTGRES_URL=postgresql://edgeloop:edgeloop@127.0.0.1/edgeloop_test
fi

# torch first, pinned: this takes the CPU build; an unpinned torch would pull a multi-GB CUDA build
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -e ".[host,device,openvino,dev]"

# lint, types and layers first (seconds; mypy ~30 s cold): what does not pass them does not land
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# layer rules and the no-cycle check (import-linter contracts in pyproject.toml)
.venv/bin/lint-imports --no-cache

export EDGELOOP_REQUIRE_BROKER=1
.venv/bin/python -m pytest -m "not slow" -q --durations=25 "$@"

# The device side on the Pythons of JetPack: 3.10 (JetPack 6) and 3.12 (JetPack 7), each in a venv of its own
# with edgeloop[device,openvino,dev] and no torch, over tests/shared and tests/device. Interpreters come from
# pyenv (~/.pyenv/versions/3.X.*) or the PATH (python3.X); under CI=true, 3.10 is required.
# EDGELOOP_DEVICE_PYTHONS="3.10 3.12" chooses them ("" skips this step); it runs only when no pytest
# arguments were given (a targeted run stays targeted).
device_python() {
  local v=$1 found
  found=$(ls -d "$HOME"/.pyenv/versions/"$v".*/bin/python 2>/dev/null | sort -V | tail -1)
  [ -n "$found" ] || found=$(command -v "python$v" || true)
  echo "$found"
}
if [ $# -eq 0 ]; then
  for v in ${EDGELOOP_DEVICE_PYTHONS-3.10 3.12}; do
    py=$(device_python "$v")
    if [ -z "$py" ]; then
      if [ "$v" = "3.10" ] && [ "${CI:-}" = "true" ]; then
        echo "test.sh: Python 3.10 (JetPack 6's) is required under CI and was not found" >&2
        exit 1
      fi
      echo "test.sh: no Python $v here (pyenv or python$v): skipping the device tests on it" >&2
      continue
    fi
    venv=".venv-py$v"
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -e ".[device,openvino,dev]"
    if "$venv/bin/python" -c 'import torch' 2>/dev/null; then
      echo "test.sh: $venv has torch: the device side must install and pass without it" >&2
      exit 1
    fi
    echo "test.sh: device tests on $("$venv/bin/python" -V) ($py), no torch"
    "$venv/bin/python" -m pytest -m "not slow" -q -p no:cacheprovider tests/shared tests/device
  done
fi
