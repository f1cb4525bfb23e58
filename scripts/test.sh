#!/usr/bin/env bash
# `make test`: brings up what the tests need, then runs every check and test. Exit code = result.
# Services this run started are stopped again at the end unless FCFS_KEEP_STACK=1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

stop_on_exit_what_this_run_starts

# No incremental compilation: a run from a fresh clone (what CI does) never reuses it, and its cache
# in the shared target directory grew by gigabytes per clone path until the disk filled up.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# The tests start their own runners in-process; only the services are needed.
"$ROOT/scripts/stack.sh" services

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy -q --workspace --all-targets -- -D warnings
log "sam validate --lint"
SAM_CLI_TELEMETRY=0 "$SAM_VENV/bin/sam" validate --lint -t "$ROOT/template.yaml"
log "cfn-lint and checkov (accepted findings: template-checks.yaml)"
"$CHECKOV_VENV/bin/python" "$ROOT/scripts/template_checks.py" "$CFN_LINT_VENV/bin/cfn-lint" \
  "$CHECKOV_VENV/bin/checkov" "$ROOT/template.yaml" "$ROOT/template-checks.yaml"

set -a
# shellcheck disable=SC1091
source "$STATE_DIR/env"
set +a
log "cargo build --bins (the cold-start tests run the functions' real Lambda binaries)"
cargo build -q --workspace --bins
log "cargo test (unit and integration)"
cargo test --workspace --no-fail-fast
# The integration tests built both binaries; Schemathesis drives docs/openapi.yaml against a
# runner of this build with a real key (every operation, negative cases included).
log "schemathesis against the local runner"
"$ROOT/scripts/schemathesis.sh" "$CARGO_TARGET_DIR/debug/fcfs-runner" "$CARGO_TARGET_DIR/debug/fcfs-admin"
