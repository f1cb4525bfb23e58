#!/usr/bin/env bash
# `make bench`: services up, release build, then every benchmark; rewrites docs/benchmarks.md and
# docs/benchmarks-latency.png. Services this run started are stopped again unless FCFS_KEEP_STACK=1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

stop_on_exit_what_this_run_starts

# wrk, redis-benchmark and a font for the plot come with the services' install step.
FCFS_BENCH=1 "$ROOT/scripts/stack.sh" services

log "cargo build --release -p fcfs-bench"
cargo build -q --release -p fcfs-bench

set -a
# shellcheck disable=SC1091
source "$STATE_DIR/env"
set +a
# The runner's own request and batch logs would cost more than the requests they describe.
export RUST_LOG="${RUST_LOG:-warn}"
"$CARGO_TARGET_DIR/release/fcfs-bench" "$@"
