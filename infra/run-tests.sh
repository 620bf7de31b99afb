#!/usr/bin/env bash
# Starts the real services (installing them on first use), runs the whole pytest suite against
# them, and stops them again, whatever the outcome. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
started_here=0
if ! $BIN/lambdarec infra status >/dev/null 2>&1; then started_here=1; fi
cleanup() { if [ "$started_here" = 1 ] || [ "${CI:-}" = "true" ]; then $BIN/lambdarec infra down || true; fi; }
trap cleanup EXIT
$BIN/lambdarec infra up || exit $?
$BIN/lambdarec db migrate || exit $?
mkdir -p test-artifacts
$BIN/pytest --junitxml=test-artifacts/junit.xml "$@"
