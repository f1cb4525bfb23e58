#!/usr/bin/env bash
# `make bench`: services up, release build, then every benchmark; rewrites docs/benchmarks.md and
# docs/benchmarks-latency.png. Services this run started are stopped again unless FCFS_KEEP_STACK=1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

stop_on_exit_what_this_run_starts

# wrk, redis-benchmark and a font for the plot come with the services' install step.
FCFS_BENCH=1 FCFS_BUILD_PROFILE=release "$ROOT/scripts/stack.sh" services
# The SQS-bound scenarios run once more with SQS on LocalStack, for comparison: its queues go into
# a second environment file that the bench hands to a child run.
export FCFS_SQS_EMULATOR; FCFS_SQS_EMULATOR="$(sqs_emulator_label "$FCFS_AWS")"
if [[ $FCFS_AWS != localstack ]]; then
  FCFS_AWS=localstack FCFS_BUILD_PROFILE=release FCFS_ENV_FILE="$STATE_DIR/env-localstack" \
    "$ROOT/scripts/stack.sh" services >/dev/null
  export FCFS_BENCH_COMPARE_ENV="$STATE_DIR/env-localstack"
  export FCFS_BENCH_COMPARE_LABEL; FCFS_BENCH_COMPARE_LABEL="$(sqs_emulator_label localstack)"
fi

log "cargo build --release -p fcfs-bench"
cargo build -q --release -p fcfs-bench

# Only the environment file decides where SQS is.
unset AWS_ENDPOINT_URL_SQS
set -a
# shellcheck disable=SC1091
source "$ENV_FILE"
set +a
# The runner's own request and batch logs would cost more than the requests they describe.
export RUST_LOG="${RUST_LOG:-warn}"
"$CARGO_TARGET_DIR/release/fcfs-bench" "$@"
