#!/usr/bin/env bash
# `sam local` on a machine without Docker (README, "SAM local"): podman serves SAM CLI as its
# Docker engine, a Debian root filesystem is the Lambda base image, and a build directory holds
# each function's debug binary as its `bootstrap`, so no `sam build` (21 minutes) is needed.
#   sam_local.sh prepare          podman + its service, the base image, .local/sam-build (idempotent)
#   sam_local.sh start-api [ARG]  `sam local start-api` on 127.0.0.1:$FCFS_SAM_PORT (3300), authorizer
#                                 included, against the local stack (.local/env)
#   sam_local.sh invoke FN [ARG]  `sam local invoke FN` (e.g. -e events/authorizer.json)
#   sam_local.sh env              print the variables that make a bare `sam local …` work here
#   sam_local.sh stop             stop what prepare and SAM started: the podman service, the
#                                 bridge's anchor container, the forwarder, leftover containers
# Nothing here is on `make up`'s path; `make test` runs `prepare` for tests/sam_local.rs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SAM_PORT="${FCFS_SAM_PORT:-3300}"
# The stack's ports SAM's containers reach through the bridge (see bridge_up): Redis, MariaDB,
# LocalStack, fauxqs.
FORWARDED_PORTS=("$REDIS_PORT" "$MYSQL_PORT" "$AWS_PORT" "$FAUXQS_PORT")
BRIDGE_ANCHOR=fcfs-sam-bridge
SAM_DIR="$STATE_DIR/sam"
SAM_BUILD_DIR="$STATE_DIR/sam-build"
SAM_ENV_VARS="$SAM_BUILD_DIR/env-vars.json"
PODMAN_SOCK="$RUN_DIR/podman.sock"
export CONTAINERS_CONF="$SAM_DIR/containers.conf"
export DOCKER_HOST="unix://$PODMAN_SOCK"
export SAM_CLI_TELEMETRY=0
# The functions' binaries here are this machine's debug builds, so SAM must run them as this
# machine's architecture, whatever the template's Architecture parameter deploys (arm64 by
# default): every `sam local` here gets it in --parameter-overrides. SAM picks its base image, the
# emulator it adds and the container's platform by it; podman cannot run another one here.
case "$(uname -m)" in
  x86_64) LAMBDA_ARCH=x86_64 ;;
  aarch64 | arm64) LAMBDA_ARCH=arm64 ;;
  *) die "no Lambda architecture for this machine's $(uname -m)" ;;
esac
SAM_PARAMETERS=("Stage=$STAGE" "Architecture=$LAMBDA_ARCH")
# The tag SAM builds its emulation image FROM for `Runtime: provided.al2023` on that architecture,
# and the image SAM derives from it (the Runtime Interface Emulator added). With --skip-pull-image
# SAM uses whatever carries these tags.
BASE_IMAGE=public.ecr.aws/lambda/provided:al2023-$LAMBDA_ARCH
RAPID_IMAGE=public.ecr.aws/lambda/provided:al2023-rapid-$LAMBDA_ARCH
# The base image's recipe: a Debian 12 root filesystem of the Essential packages (glibc, a shell,
# coreutils' mv and chmod, /tmp 1777) plus CA certificates, made by mmdebstrap from Debian's own
# packages, without documentation. Its hash names the cached tarball and labels the image, so
# changing any word here builds both again.
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR="${FCFS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ROOTFS_ARGS=(--variant=essential --include=ca-certificates --mode=root --format=tar
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*')
ROOTFS_KEY="$(printf '%s\n' "$DEBIAN_SUITE" "$DEBIAN_MIRROR" "${ROOTFS_ARGS[@]}" | sha256sum | cut -c1-16)"
ROOTFS_TAR="$CACHE_DIR/sam-local/debian-$DEBIAN_SUITE-$ROOTFS_KEY.tar"

sam() { "$SAM_VENV/bin/sam" "$@"; }

# podman, runc (crun cannot run on these hybrid cgroups) and mmdebstrap, from Debian.
install_tools() {
  local missing=() tool
  for tool in podman runc mmdebstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  ((${#missing[@]} == 0)) && return
  log "installing ${missing[*]} (apt-get)"
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  "${sudo[@]}" apt-get update -q >"$LOG_DIR/sam-apt.log" 2>&1 || true
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}" >>"$LOG_DIR/sam-apt.log" 2>&1 ||
    die "apt-get install ${missing[*]} failed; see $LOG_DIR/sam-apt.log"
}

# The process may not raise an rlimit (no CAP_SYS_RESOURCE): podman's default ulimits would make
# every container fail with "setrlimit RLIMIT_NOFILE: Operation not permitted". crun refuses the
# hybrid cgroups these machines have; runc runs them.
write_containers_conf() {
  mkdir -p "$SAM_DIR"
  local conf
  conf='# Written by scripts/sam_local.sh (why: see there).
[containers]
default_ulimits = []

[engine]
runtime = "runc"'
  [[ -f "$CONTAINERS_CONF" && "$(<"$CONTAINERS_CONF")" == "$conf" ]] && return
  printf '%s\n' "$conf" >"$CONTAINERS_CONF"
  # The service reads it when it starts.
  stop_service
}

podman_ok() { podman --url "$DOCKER_HOST" version >/dev/null 2>&1; }

# podman's Docker-compatible API on a socket of this checkout, for SAM CLI (DOCKER_HOST).
podman_service_up() {
  if podman_ok; then return; fi
  rm -f "$PODMAN_SOCK"
  log "starting the podman service on $PODMAN_SOCK"
  setsid nohup podman system service --time=0 "$DOCKER_HOST" >>"$LOG_DIR/podman.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/podman.pid"
  wait_for 30 "podman service" podman_ok || die "the podman service did not start; see $LOG_DIR/podman.log"
}

# How SAM's containers reach the stack. SAM CLI 1.170 takes `--docker-network host` as "no network
# to connect" and creates its containers through the Docker API on the default bridge (podman's
# API ignores containers.conf's netns there), while the stack's services listen on 127.0.0.1
# only. So: a container that does nothing keeps the bridge (and its gateway address) up, and one
# small forwarder relays the gateway's ports to the same ports on 127.0.0.1. The functions are
# given the gateway wherever .local/env says 127.0.0.1 (write_env_vars). Nothing listens beyond
# the bridge, which only local containers are on.
bridge_up() {
  if [[ "$(podman container inspect --format '{{.State.Running}}' "$BRIDGE_ANCHOR" 2>/dev/null)" != true ]]; then
    podman rm -f "$BRIDGE_ANCHOR" >/dev/null 2>&1 || true
    podman run -d --name "$BRIDGE_ANCHOR" --network bridge "$BASE_IMAGE" sleep infinity >/dev/null ||
      die "podman cannot start a container on its bridge"
  fi
  GATEWAY="$(podman container inspect --format '{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}' "$BRIDGE_ANCHOR")"
  [[ -n $GATEWAY ]] || die "podman's bridge has no gateway address"
  mkdir -p "$SAM_BUILD_DIR"
  echo "$GATEWAY" >"$SAM_BUILD_DIR/host-address"
  local wanted="$GATEWAY ${FORWARDED_PORTS[*]}"
  if pid_alive "$RUN_DIR/sam-forward.pid" && [[ "$(cat "$RUN_DIR/sam-forward.args" 2>/dev/null)" == "$wanted" ]]; then return; fi
  pid_alive "$RUN_DIR/sam-forward.pid" && kill "$(cat "$RUN_DIR/sam-forward.pid")"
  cat >"$SAM_DIR/forward.py" <<'PY'
# Relays connections to BIND:PORT to 127.0.0.1:PORT, for each PORT (scripts/sam_local.sh, bridge_up).
import asyncio, socket, sys

bind, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def relay(port):
    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return handle


async def main():
    servers = []
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: outlives a restart of the bridge
        sock.bind((bind, port))
        servers.append(await asyncio.start_server(relay(port), sock=sock))
    await asyncio.gather(*(server.serve_forever() for server in servers))


asyncio.run(main())
PY
  setsid nohup "$SAM_VENV/bin/python" "$SAM_DIR/forward.py" "$GATEWAY" "${FORWARDED_PORTS[@]}" \
    >>"$LOG_DIR/sam-forward.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/sam-forward.pid"
  echo "$wanted" >"$RUN_DIR/sam-forward.args"
  wait_for 10 "forwarder on $GATEWAY (${FORWARDED_PORTS[*]})" port_open "$GATEWAY" "${FORWARDED_PORTS[0]}" ||
    die "the forwarder did not start; see $LOG_DIR/sam-forward.log"
}

image_label() { podman image inspect --format '{{index .Config.Labels "fcfs.recipe"}}' "$1" 2>/dev/null; }

# The base image from the cached Debian root filesystem (built once per recipe: about 15 s).
base_image() {
  [[ "$(image_label "$BASE_IMAGE")" == "$ROOTFS_KEY" ]] && return
  if [[ ! -f "$ROOTFS_TAR" ]]; then
    log "building the Debian $DEBIAN_SUITE root filesystem for the Lambda base image (mmdebstrap)"
    mkdir -p "$(dirname "$ROOTFS_TAR")"
    mmdebstrap "${ROOTFS_ARGS[@]}" "$DEBIAN_SUITE" "$ROOTFS_TAR.tmp" "$DEBIAN_MIRROR" >"$LOG_DIR/sam-rootfs.log" 2>&1 ||
      die "mmdebstrap failed; see $LOG_DIR/sam-rootfs.log"
    mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  fi
  log "importing it as $BASE_IMAGE"
  # Lambda's images run the runtime from /var/runtime and the code from /var/task.
  podman import --change "LABEL fcfs.recipe=$ROOTFS_KEY" --change 'WORKDIR /var/task' \
    --change 'ENV LANG=C.UTF-8 TZ=:UTC LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime' \
    "$ROOTFS_TAR" "$BASE_IMAGE" >>"$LOG_DIR/sam-rootfs.log" 2>&1 || die "podman import failed; see $LOG_DIR/sam-rootfs.log"
  # SAM builds its emulation image once and keeps it: drop the one built on the old base.
  podman rmi -f "$RAPID_IMAGE" >/dev/null 2>&1 || true
}

# .local/sam-build: template.yaml with every function's CodeUri on a directory holding its debug
# binary as `bootstrap`, and the variables the local stack gives functions declared (SAM passes a
# function only the variables its template declares, whatever --env-vars says).
build_dir() {
  local bins=() bin absent=0
  mapfile -t bins < <(sed -n 's/^ *Binary: *//p' "$ROOT/template.yaml" | sort -u)
  for bin in "${bins[@]}"; do [[ -x "$CARGO_TARGET_DIR/debug/$bin" ]] || absent=1; done
  if ((absent)); then
    log "building the functions' binaries (cargo build --workspace --bins)"
    (cd "$ROOT" && cargo build -q --workspace --bins)
  fi
  mkdir -p "$SAM_BUILD_DIR"
  "$SAM_VENV/bin/python" - "$ROOT/template.yaml" "$SAM_BUILD_DIR" "$CARGO_TARGET_DIR/debug" <<'PY'
import os, shutil, sys, filecmp
from samcli.yamlhelper import parse_yaml_file, yaml_dump

template_path, out, target = sys.argv[1:]
template = parse_yaml_file(template_path)
functions = []
for name, resource in template["Resources"].items():
    if resource.get("Type") != "AWS::Serverless::Function":
        continue
    binary = resource.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
    if not binary:
        sys.exit(f"{name}: no Metadata.BuildProperties.Binary")
    code = os.path.join(out, name)
    os.makedirs(code, exist_ok=True)
    bootstrap = os.path.join(code, "bootstrap")
    # Copied only when it changed, so a repeated prepare rewrites nothing.
    if not (os.path.exists(bootstrap) and filecmp.cmp(os.path.join(target, binary), bootstrap, shallow=False)):
        shutil.copy2(os.path.join(target, binary), bootstrap + ".tmp")
        os.replace(bootstrap + ".tmp", bootstrap)
    resource["Properties"]["CodeUri"] = name
    # Built already: SAM must not look for a build method.
    resource.pop("Metadata", None)
    functions.append(name)
# SAM CLI cannot read an authorizer's `!GetAtt Fn.Arn` when the function has a FunctionName of its
# own ("Unable to parse the Lambda ARN for Authorizer", aws-sam-cli#7483) and then serves the API
# WITHOUT the authorizer. It finds the function by the name at the end of a literal Lambda ARN, so
# the generated template names it by its logical id there (account and region are SAM's dummies).
for resource in template["Resources"].values():
    if resource.get("Type") != "AWS::Serverless::Api":
        continue
    for authorizer in resource["Properties"].get("Auth", {}).get("Authorizers", {}).values():
        arn = authorizer.get("FunctionArn")
        if isinstance(arn, dict) and "Fn::GetAtt" in arn:
            target = arn["Fn::GetAtt"]
            target = target if isinstance(target, str) else ".".join(target)
            function = target.split(".")[0]
            authorizer["FunctionArn"] = f"arn:aws:lambda:us-east-1:123456789012:function:{function}"
variables = template.setdefault("Globals", {}).setdefault("Function", {}).setdefault("Environment", {}).setdefault("Variables", {})
# Where the SDK finds the local AWS services (values from .local/env through --env-vars).
for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS"):
    variables.setdefault(name, "")
text = "# Generated by scripts/sam_local.sh from ../../template.yaml: do not edit.\n" + yaml_dump(template)
path = os.path.join(out, "template.yaml")
if not (os.path.exists(path) and open(path).read() == text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
with open(os.path.join(out, "functions"), "w") as f:
    f.write("\n".join(functions) + "\n")
PY
}

# --env-vars for every function: the local stack's environment (.local/env), as the runner gives
# it to its in-process functions, with 127.0.0.1 as the containers reach it (bridge_up). DATABASE_URL is left
# out, so the functions read their credentials from the (local) Secrets Manager, as on AWS; the
# secret names 127.0.0.1 as the host, so DATABASE_HOST (which wins over it) says where that is.
# SQS on LocalStack is AWS_ENDPOINT_URL. SAM passes a function only what its template declares.
write_env_vars() {
  [[ -f "$ENV_FILE" ]] || die "$ENV_FILE is missing: start the local stack first (scripts/stack.sh services)"
  (
    set -a
    # shellcheck disable=SC1090
    source "$ENV_FILE"
    set +a
    "$SAM_VENV/bin/python" - "$ENV_FILE" "$SAM_BUILD_DIR/functions" "$SAM_ENV_VARS" "$(cat "$SAM_BUILD_DIR/host-address")" <<'PY'
import json, os, re, sys
env_file, functions_file, out, host = sys.argv[1:]
client_only = {"DATABASE_URL", "PATH", "CARGO_LAMBDA", "DYNAMODB_LOCAL_JAR", "FCFS_AWS"}
names = [m.group(1) for m in map(re.compile(r"^([A-Z_][A-Z0-9_]*)=").match, open(env_file)) if m]
env = {n: os.environ[n] for n in names if n not in client_only and n in os.environ}
env = {n: re.sub(r"\b(127\.0\.0\.1|localhost)\b", host, v) for n, v in env.items()}
env.setdefault("AWS_ENDPOINT_URL_SQS", env["AWS_ENDPOINT_URL"])
env["DATABASE_HOST"] = host
functions = open(functions_file).read().split()
with open(out + ".tmp", "w") as f:
    json.dump({name: env for name in functions}, f, indent=2, sort_keys=True)
os.replace(out + ".tmp", out)
PY
  )
}

cmd_prepare() {
  local started=$SECONDS
  [[ -x "$SAM_VENV/bin/sam" ]] || "$ROOT/scripts/install.sh"
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  install_tools
  write_containers_conf
  podman_service_up
  base_image
  bridge_up
  build_dir
  # The functions' --env-vars, from the stack's environment (once the stack has written it).
  local args=(-t "$SAM_BUILD_DIR/template.yaml" --skip-pull-image --parameter-overrides "${SAM_PARAMETERS[@]}")
  if [[ -f "$ENV_FILE" ]]; then
    sam_args
    args=("${SAM_ARGS[@]}")
  fi
  # SAM builds its emulation image (the base plus the Runtime Interface Emulator) at its first
  # invocation; one invocation of the sample authorizer event builds it here and proves the chain.
  if ! podman image exists "$RAPID_IMAGE"; then
    log "first invocation through SAM (builds its emulation image)"
    sam local invoke AuthorizerFunction "${args[@]}" -e "$ROOT/events/authorizer.json" >"$LOG_DIR/sam-first-invoke.log" 2>&1 ||
      die "sam local invoke failed; see $LOG_DIR/sam-first-invoke.log"
    grep -q '"Deny"' "$LOG_DIR/sam-first-invoke.log" ||
      die "the sample authorizer event was not denied; see $LOG_DIR/sam-first-invoke.log"
  fi
  log "sam local is ready ($((SECONDS - started)) s): $SAM_BUILD_DIR/template.yaml"
}

# Arguments every `sam local` command here needs: SAM_ARGS. A caller's own --env-vars (a test's,
# made from env-vars.json) replaces the stack's.
sam_args() {
  write_env_vars
  SAM_ARGS=(-t "$SAM_BUILD_DIR/template.yaml" --skip-pull-image --parameter-overrides "${SAM_PARAMETERS[@]}")
  local arg
  for arg in "$@"; do [[ $arg == --env-vars || $arg == -n ]] && return; done
  SAM_ARGS+=(--env-vars "$SAM_ENV_VARS")
}

cmd_start_api() {
  cmd_prepare
  sam_args "$@"
  port_open "$BIND_HOST" "$SAM_PORT" && die "port $SAM_PORT is taken: stop it or set FCFS_SAM_PORT"
  log "sam local start-api on http://$BIND_HOST:$SAM_PORT (Ctrl-C stops it)"
  exec "$SAM_VENV/bin/sam" local start-api "${SAM_ARGS[@]}" --host "$BIND_HOST" --port "$SAM_PORT" "$@"
}

cmd_invoke() {
  [[ $# -ge 1 ]] || die "usage: $0 invoke FunctionLogicalId [-e events/FILE.json] [sam options]"
  # A full prepare costs a second or two: an invocation only needs the service, the bridge and a
  # build directory (run `prepare` again after rebuilding the functions).
  if [[ -f "$SAM_BUILD_DIR/template.yaml" ]] && podman image exists "$RAPID_IMAGE" 2>/dev/null; then
    podman_service_up
    bridge_up
  else
    cmd_prepare
  fi
  sam_args "$@"
  # The function first: --parameter-overrides takes every word after it that is not an option.
  exec "$SAM_VENV/bin/sam" local invoke "$1" "${SAM_ARGS[@]}" "${@:2}"
}

cmd_env() {
  sam_args
  cat <<EOF
export CONTAINERS_CONF=$CONTAINERS_CONF DOCKER_HOST=$DOCKER_HOST SAM_CLI_TELEMETRY=0
export PATH=$SAM_VENV/bin:\$PATH
# then, from $ROOT:
#   sam local start-api ${SAM_ARGS[*]} --port $SAM_PORT
#   sam local invoke AuthorizerFunction -e events/authorizer.json ${SAM_ARGS[*]}
EOF
}

stop_service() {
  if pid_alive "$RUN_DIR/podman.pid"; then
    log "stopping the podman service (pid $(cat "$RUN_DIR/podman.pid"))"
    kill -TERM "$(cat "$RUN_DIR/podman.pid")" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while pid_alive "$RUN_DIR/podman.pid" && ((SECONDS < deadline)); do sleep 0.2; done
  fi
  rm -f "$RUN_DIR/podman.pid"
}

# Everything prepare and SAM started: containers SAM left behind (a start-api stopped mid-request),
# the bridge's anchor, the forwarder and the podman service. Images and the rootfs stay cached.
cmd_stop() {
  podman ps -aq --filter "ancestor=$RAPID_IMAGE" | xargs -r podman rm -f >/dev/null 2>&1 || true
  podman rm -f "$BRIDGE_ANCHOR" >/dev/null 2>&1 || true
  if pid_alive "$RUN_DIR/sam-forward.pid"; then
    log "stopping the forwarder (pid $(cat "$RUN_DIR/sam-forward.pid"))"
    kill "$(cat "$RUN_DIR/sam-forward.pid")" 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/sam-forward.pid" "$RUN_DIR/sam-forward.args"
  stop_service
}

case "${1:-}" in
  prepare) cmd_prepare ;;
  start-api) shift; cmd_start_api "$@" ;;
  invoke) shift; cmd_invoke "$@" ;;
  env) cmd_env ;;
  stop) cmd_stop ;;
  *) die "usage: $0 prepare|start-api|invoke FUNCTION|env|stop" ;;
esac
