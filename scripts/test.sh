#!/usr/bin/env bash
# `make test`: brings up what the tests need, then runs every check and test. Exit code = result.
# Services this run started are stopped again at the end unless FCFS_KEEP_STACK=1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

stop_on_exit_what_this_run_starts
# tests/sam_local.rs runs SAM's containers on a podman service (scripts/sam_local.sh): when this
# run started it, stop it and what runs on it at the end too, before the services.
SAM_LOCAL_BEFORE=0
pid_alive "$RUN_DIR/podman.pid" && SAM_LOCAL_BEFORE=1
stack_exit_trap="$(trap -p EXIT | sed "s/^trap -- '\(.*\)' EXIT\$/\1/")"
trap '[[ "${FCFS_KEEP_STACK:-0}" == 1 || $SAM_LOCAL_BEFORE == 1 ]] || "$ROOT/scripts/sam_local.sh" stop; '"$stack_exit_trap" EXIT

# No incremental compilation: a run from a fresh clone (what CI does) never reuses it, and its cache
# in the shared target directory grew by gigabytes per clone path until the disk filled up.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# The tests start their own runners in-process; only the services are needed. The whole suite runs
# on LocalStack (the product promises LocalStack integration tests); the tests that use SQS then run
# again on fauxqs, the emulator `make up` and `make bench` use by default (see the end).
FCFS_AWS=localstack FCFS_BUILD_PROFILE=debug "$ROOT/scripts/stack.sh" services

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy -q --workspace --all-targets -- -D warnings
log "sam validate --lint"
SAM_CLI_TELEMETRY=0 "$SAM_VENV/bin/sam" validate --lint -t "$ROOT/template.yaml"
log "cfn-lint and checkov (accepted findings: template-checks.yaml)"
"$CHECKOV_VENV/bin/python" "$ROOT/scripts/template_checks.py" "$CFN_LINT_VENV/bin/cfn-lint" \
  "$CHECKOV_VENV/bin/checkov" "$ROOT/template.yaml" "$ROOT/template-checks.yaml"
log "promtool: the alert rules and their unit tests (observability/alerts_test.yml)"
promtool check rules "$ROOT/observability/alerts.yml"
promtool test rules "$ROOT/observability/alerts_test.yml"
# The template deployed for real on LocalStack's CloudFormation engine (a private instance on port
# 4599), checked against what the code expects, and deleted: about two minutes.
log "deploy template.yaml to a CloudFormation engine (scripts/deploy_check.py)"
rm -rf "$STATE_DIR/deploy-check"
"$LOCALSTACK_VENV/bin/python" "$ROOT/scripts/deploy_check.py" "$ROOT" "$STATE_DIR/deploy-check" "$LOCALSTACK_FS" \
  "$CARGO_TARGET_DIR/debug/fcfs-admin"

# A shell that loaded `make up`'s environment must not send this pass's SQS calls to fauxqs.
unset AWS_ENDPOINT_URL_SQS
set -a
# shellcheck disable=SC1091
source "$ENV_FILE"
set +a
log "cargo build --bins (the cold-start tests run the functions' real Lambda binaries)"
cargo build -q --workspace --bins
# The functions deploy on arm64 by default (template.yaml's Architecture), which `sam build`
# cross-compiles with cargo-lambda (zig from its venv links against aarch64 glibc). One small
# function cross-built here keeps that path working: a debug build took 5 minutes from cold on 2
# cores, then only what changed. Its ELF header's e_machine (bytes 18-19, little-endian) must be
# 0xB7, AArch64 (the tests below run this machine's own binaries).
log "cargo lambda build --arm64 -p authorizer (the functions' default architecture)"
PATH="$CARGO_LAMBDA_VENV/bin:$PATH" cargo lambda build -q --arm64 -p authorizer
arm64_machine="$(od -An -tx1 -j18 -N2 "$CARGO_TARGET_DIR/lambda/authorizer/bootstrap" | tr -d ' \n')"
[[ $arm64_machine == b700 ]] || die "the arm64 authorizer's ELF machine is $arm64_machine (bytes), not AArch64 (b7 00)"
# tests/sam_local.rs runs those binaries in SAM CLI's container: podman, the Debian base image (made
# once, then cached) and .local/sam-build with the binaries just built.
log "sam local: podman, the Lambda base image, .local/sam-build (scripts/sam_local.sh prepare)"
"$ROOT/scripts/sam_local.sh" prepare
log "cargo test (unit and integration)"
cargo test --workspace --no-fail-fast
# The integration tests built both binaries; Schemathesis drives docs/openapi.yaml against a
# runner of this build with a real key (every operation, negative cases included).
log "schemathesis against the local runner"
"$ROOT/scripts/schemathesis.sh" "$CARGO_TARGET_DIR/debug/fcfs-runner" "$CARGO_TARGET_DIR/debug/fcfs-admin"

# fauxqs beside LocalStack, its queues provisioned into a second environment file; the same tests
# that exercise SQS (the writer's poller, recovery, DLQs and alerts, grading's partitions).
log "the tests that use SQS, again with SQS on fauxqs"
FCFS_AWS=fauxqs FCFS_BUILD_PROFILE=debug FCFS_ENV_FILE="$STATE_DIR/env-fauxqs" "$ROOT/scripts/stack.sh" services
set -a
# shellcheck disable=SC1091
source "$STATE_DIR/env-fauxqs"
set +a
cargo test -p integration-tests --no-fail-fast --test foundation --test issuance --test runner --test metrics \
  --test faults --test alerts --test grading --test services --test redis_serverless --test ledger_heal
