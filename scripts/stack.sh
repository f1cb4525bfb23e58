#!/usr/bin/env bash
# The local stack: Redis (plus, for the tests, a 3-master Redis Cluster, a TLS Redis and a 3-master
# Redis Cluster that speaks only TLS and announces hostnames, as ElastiCache Serverless), MariaDB,
# LocalStack (DynamoDB, Secrets Manager, API Gateway, and SQS with FCFS_AWS=localstack) and fauxqs
# (SQS, with FCFS_AWS=fauxqs, the default), all on 127.0.0.1, and the local runner serving
# template.yaml's API on top of them.
#   stack.sh up        services + the runner on 127.0.0.1:$FCFS_API_PORT (3000) + Prometheus and
#                      Alertmanager watching it + a demo API key
#   stack.sh services  start what is not running (reuse what is), migrate, provision, write .local/env
#                      (FCFS_ENV_FILE names another file, for a second emulator beside the first)
#   stack.sh down      stop only what `up` started (pid files in .local/run)
#   stack.sh status    say what runs where
set -euo pipefail
source "$(dirname "$0")/lib.sh"

mkdir -p "$RUN_DIR" "$LOG_DIR" "$DATA_DIR"

# Each service started here is its own process group, so `down` can stop its children too
# (LocalStack runs DynamoDB Local as a Java child).
spawn() { # spawn NAME COMMAND...
  local name=$1; shift
  setsid nohup "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name.pid"
}

redis_up() {
  if redis-cli -h "$BIND_HOST" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
    log "redis: reusing the server on $BIND_HOST:$REDIS_PORT"; return
  fi
  mkdir -p "$DATA_DIR/redis"
  # An append-only file (fsync every second, as ElastiCache's durability roughly is): campaigns
  # made before a `make down` still sell after the next `make up`, instead of answering 503 until
  # `fcfs-admin rebuild-ledger` restores their state from MySQL.
  # noeviction: every ledger key has an expiry, so a volatile-* policy would drop live places
  # under memory pressure; a full Redis must refuse new work instead (see README, Partner limits).
  spawn redis redis-server --bind "$BIND_HOST" --port "$REDIS_PORT" --dir "$DATA_DIR/redis" \
    --save "" --appendonly yes --appendfsync everysec --daemonize no --protected-mode yes \
    --maxmemory-policy noeviction
  wait_for 20 "redis on $BIND_HOST:$REDIS_PORT" redis-cli -h "$BIND_HOST" -p "$REDIS_PORT" ping ||
    die "redis did not start; see $LOG_DIR/redis.log"
}

redis_cluster_ok() { # every node agrees the cluster serves all slots with all its masters
  local port info
  for port in "${REDIS_CLUSTER_PORTS[@]}"; do
    info="$(redis-cli -h "$BIND_HOST" -p "$port" cluster info 2>/dev/null)" || return 1
    grep -q '^cluster_state:ok' <<<"$info" || return 1
    grep -q "^cluster_known_nodes:${#REDIS_CLUSTER_PORTS[@]}" <<<"$info" || return 1
  done
}

# A Redis Cluster of one master per port (no replicas: the tests need slots spread over nodes,
# not failover), bound to 127.0.0.1 and, like the main Redis, without persistence. Reused while
# it is healthy; otherwise the nodes this checkout started are stopped and the cluster is created
# afresh (a node forgets nothing on its own: its nodes.conf is deleted with its directory).
redis_cluster_up() {
  local port nodes=()
  if redis_cluster_ok; then
    log "redis cluster: reusing the cluster on $BIND_HOST:${REDIS_CLUSTER_PORTS[*]}"; return
  fi
  for port in "${REDIS_CLUSTER_PORTS[@]}"; do stop_pidfile "redis-cluster-$port"; done
  for port in "${REDIS_CLUSTER_PORTS[@]}"; do
    port_open "$BIND_HOST" "$port" || port_open "$BIND_HOST" $((port + 10000)) &&
      die "port $port (or its cluster bus port $((port + 10000))) is taken by something that is not a healthy cluster of ours; set FCFS_REDIS_CLUSTER_PORTS"
  done
  for port in "${REDIS_CLUSTER_PORTS[@]}"; do
    rm -rf "$DATA_DIR/redis-cluster/$port"
    mkdir -p "$DATA_DIR/redis-cluster/$port"
    spawn "redis-cluster-$port" redis-server --bind "$BIND_HOST" --port "$port" \
      --dir "$DATA_DIR/redis-cluster/$port" --save "" --appendonly no --daemonize no --protected-mode yes \
      --maxmemory-policy noeviction --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000
    nodes+=("$BIND_HOST:$port")
  done
  for port in "${REDIS_CLUSTER_PORTS[@]}"; do
    wait_for 20 "redis cluster node $BIND_HOST:$port" redis-cli -h "$BIND_HOST" -p "$port" ping ||
      die "redis cluster node $port did not start; see $LOG_DIR/redis-cluster-$port.log"
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >>"$LOG_DIR/redis-cluster-create.log" 2>&1 ||
    die "redis-cli --cluster create failed; see $LOG_DIR/redis-cluster-create.log"
  wait_for 30 "redis cluster on $BIND_HOST:${REDIS_CLUSTER_PORTS[*]}" redis_cluster_ok ||
    die "the redis cluster did not reach cluster_state:ok; see $LOG_DIR/redis-cluster-*.log"
}

# A private CA and a certificate for 127.0.0.1, localhost and the TLS cluster's announced hostname
# signed by it, kept in the cache. Clients trust the CA through REDIS_TLS_CA_FILE; the CA's key
# never leaves the directory. The certificate serves clients and, on the TLS cluster's bus, is
# the client certificate each node shows the others (Redis always asks for one there), hence
# both serverAuth and clientAuth. The CA is made once (again when it has less than a day left);
# the certificate again when it has less than a day left, lacks the hostname or clientAuth, or
# the CA is new. Re-issuing it under the same CA leaves running servers trusted.
redis_tls_certs() {
  local dir="$REDIS_TLS_DIR" san="IP:127.0.0.1,DNS:localhost" new_ca=0
  [[ $REDIS_TLS_CLUSTER_HOST == localhost ]] || san+=",DNS:$REDIS_TLS_CLUSTER_HOST"
  mkdir -p "$dir"
  if ! [[ -f "$dir/ca.crt" && -f "$dir/ca.key" ]] || ! openssl x509 -checkend 86400 -noout -in "$dir/ca.crt" >/dev/null 2>&1; then
    log "redis tls: making a CA in $dir"
    (
      umask 077
      cd "$dir"
      openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -days 3650 \
        -subj "/CN=fcfs-coupons local Redis CA" -keyout ca.key -out ca.crt
      chmod 644 ca.crt
    ) >>"$LOG_DIR/redis-tls-certs.log" 2>&1 || die "openssl could not make the CA; see $LOG_DIR/redis-tls-certs.log"
    new_ca=1
  fi
  if ((new_ca == 0)) && [[ -f "$dir/server.key" ]] &&
    openssl x509 -checkend 86400 -noout -in "$dir/server.crt" >/dev/null 2>&1 &&
    openssl x509 -noout -checkhost "$REDIS_TLS_CLUSTER_HOST" -in "$dir/server.crt" 2>/dev/null | grep -q ' does match ' &&
    openssl x509 -noout -ext extendedKeyUsage -in "$dir/server.crt" 2>/dev/null | grep -q 'TLS Web Client Authentication'; then
    return
  fi
  log "redis tls: making a server certificate for $san in $dir"
  (
    umask 077
    cd "$dir"
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -subj "/CN=localhost" -keyout server.key -out server.csr
    printf '%s\n' "subjectAltName=$san" 'basicConstraints=critical,CA:FALSE' \
      'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth,clientAuth' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 825 \
      -extfile server.ext -out server.crt
    chmod 644 server.crt
  ) >>"$LOG_DIR/redis-tls-certs.log" 2>&1 || die "openssl could not make the certificate; see $LOG_DIR/redis-tls-certs.log"
}

redis_tls_ping() {
  redis-cli --tls --cacert "$REDIS_TLS_DIR/ca.crt" -h "$BIND_HOST" -p "$REDIS_TLS_PORT" ping 2>/dev/null | grep -q PONG
}

# A Redis that speaks only TLS (as ElastiCache with in-transit encryption does): no plain port.
redis_tls_up() {
  redis_tls_certs
  if redis_tls_ping; then
    log "redis tls: reusing the server on $BIND_HOST:$REDIS_TLS_PORT"; return
  fi
  stop_pidfile redis-tls
  port_open "$BIND_HOST" "$REDIS_TLS_PORT" &&
    die "port $REDIS_TLS_PORT is taken by something that does not answer TLS with our CA; set FCFS_REDIS_TLS_PORT"
  mkdir -p "$DATA_DIR/redis-tls"
  spawn redis-tls redis-server --bind "$BIND_HOST" --port 0 --tls-port "$REDIS_TLS_PORT" \
    --tls-cert-file "$REDIS_TLS_DIR/server.crt" --tls-key-file "$REDIS_TLS_DIR/server.key" \
    --tls-ca-cert-file "$REDIS_TLS_DIR/ca.crt" --tls-auth-clients no \
    --dir "$DATA_DIR/redis-tls" --save "" --appendonly no --daemonize no --protected-mode yes \
    --maxmemory-policy noeviction
  wait_for 20 "redis tls on $BIND_HOST:$REDIS_TLS_PORT" redis_tls_ping ||
    die "redis with TLS did not start; see $LOG_DIR/redis-tls.log"
}

redis_tls_cli() { # redis_tls_cli PORT ARGS...: redis-cli over TLS, trusting only the private CA
  local port=$1; shift
  redis-cli --tls --cacert "$REDIS_TLS_DIR/ca.crt" -h "$BIND_HOST" -p "$port" "$@"
}

redis_tls_cluster_node_ping() { redis_tls_cli "$1" ping 2>/dev/null | grep -q PONG; }

# Every node answers over TLS with our CA, agrees the cluster serves all slots with all its
# masters, and announces the configured hostname as its preferred endpoint.
redis_tls_cluster_ok() {
  local port info
  for port in "${REDIS_TLS_CLUSTER_PORTS[@]}"; do
    info="$(redis_tls_cli "$port" cluster info 2>/dev/null)" || return 1
    grep -q '^cluster_state:ok' <<<"$info" || return 1
    grep -q "^cluster_known_nodes:${#REDIS_TLS_CLUSTER_PORTS[@]}" <<<"$info" || return 1
    [[ "$(redis_tls_cli "$port" --raw config get cluster-announce-hostname 2>/dev/null | sed -n 2p)" == "$REDIS_TLS_CLUSTER_HOST" ]] || return 1
    [[ "$(redis_tls_cli "$port" --raw config get cluster-preferred-endpoint-type 2>/dev/null | sed -n 2p)" == hostname ]] || return 1
  done
}

# The cluster as ElastiCache Serverless serves it: TLS only (no plain port; the cluster bus on TLS
# too), each node announcing REDIS_TLS_CLUSTER_HOST, and CLUSTER SLOTS/SHARDS and MOVED naming
# nodes by that hostname, which the server certificate carries. One master per port, no
# persistence, reused while healthy, created afresh otherwise (as `redis_cluster_up`). All nodes
# share the hostname (locally every name is 127.0.0.1) and differ by port.
redis_tls_cluster_up() {
  local port nodes=()
  redis_tls_certs
  if redis_tls_cluster_ok; then
    log "redis tls cluster: reusing the cluster on $REDIS_TLS_CLUSTER_HOST:${REDIS_TLS_CLUSTER_PORTS[*]}"; return
  fi
  for port in "${REDIS_TLS_CLUSTER_PORTS[@]}"; do stop_pidfile "redis-tls-cluster-$port"; done
  for port in "${REDIS_TLS_CLUSTER_PORTS[@]}"; do
    port_open "$BIND_HOST" "$port" || port_open "$BIND_HOST" $((port + 10000)) &&
      die "port $port (or its cluster bus port $((port + 10000))) is taken by something that is not a healthy TLS cluster of ours; set FCFS_REDIS_TLS_CLUSTER_PORTS"
  done
  for port in "${REDIS_TLS_CLUSTER_PORTS[@]}"; do
    rm -rf "$DATA_DIR/redis-tls-cluster/$port"
    mkdir -p "$DATA_DIR/redis-tls-cluster/$port"
    spawn "redis-tls-cluster-$port" redis-server --bind "$BIND_HOST" --port 0 --tls-port "$port" \
      --tls-cert-file "$REDIS_TLS_DIR/server.crt" --tls-key-file "$REDIS_TLS_DIR/server.key" \
      --tls-ca-cert-file "$REDIS_TLS_DIR/ca.crt" --tls-auth-clients no --tls-cluster yes \
      --dir "$DATA_DIR/redis-tls-cluster/$port" --save "" --appendonly no --daemonize no --protected-mode yes \
      --maxmemory-policy noeviction --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
      --cluster-announce-hostname "$REDIS_TLS_CLUSTER_HOST" --cluster-preferred-endpoint-type hostname
    nodes+=("$BIND_HOST:$port")
  done
  for port in "${REDIS_TLS_CLUSTER_PORTS[@]}"; do
    wait_for 20 "redis tls cluster node $BIND_HOST:$port" redis_tls_cluster_node_ping "$port" ||
      die "redis tls cluster node $port did not start; see $LOG_DIR/redis-tls-cluster-$port.log"
  done
  # redis-cli waits for the nodes to meet with no end of its own: nodes that cannot talk over TLS
  # (a certificate they refuse) would keep it waiting forever.
  timeout 60 redis-cli --tls --cacert "$REDIS_TLS_DIR/ca.crt" --cluster create "${nodes[@]}" --cluster-replicas 0 \
    --cluster-yes >>"$LOG_DIR/redis-tls-cluster-create.log" 2>&1 ||
    die "redis-cli --tls --cluster create failed or did not finish in 60 s; see $LOG_DIR/redis-tls-cluster-create.log and $LOG_DIR/redis-tls-cluster-*.log"
  wait_for 30 "redis tls cluster on $REDIS_TLS_CLUSTER_HOST:${REDIS_TLS_CLUSTER_PORTS[*]}" redis_tls_cluster_ok ||
    die "the redis tls cluster did not reach cluster_state:ok; see $LOG_DIR/redis-tls-cluster-*.log"
}

mysql_app() { mariadb --protocol=tcp -h "$BIND_HOST" -P "$MYSQL_PORT" -u "$MYSQL_USER" -p"$MYSQL_PASSWORD" "$MYSQL_DATABASE" "$@"; }

mysql_up() {
  local admin=()
  if port_open "$BIND_HOST" "$MYSQL_PORT"; then
    log "mariadb: reusing the server on $BIND_HOST:$MYSQL_PORT"
    mysql_app -e 'SELECT 1' >/dev/null 2>&1 && return
    # An existing server without our database: Debian's root account authenticates by socket.
    admin=(mariadb -u root)
  else
    local datadir="$DATA_DIR/mariadb"
    if [[ ! -d "$datadir/mysql" ]]; then
      log "mariadb: initialising $datadir"
      mariadb-install-db --no-defaults --datadir="$datadir" --user="$(id -un)" \
        --auth-root-authentication-method=socket --skip-test-db >"$LOG_DIR/mariadb-install.log" 2>&1 ||
        die "mariadb-install-db failed; see $LOG_DIR/mariadb-install.log"
    fi
    spawn mariadb mariadbd --no-defaults --datadir="$datadir" --user="$(id -un)" \
      --socket="$RUN_DIR/mysqld.sock" --pid-file="$RUN_DIR/mariadbd.pid" \
      --bind-address="$BIND_HOST" --port="$MYSQL_PORT" --skip-name-resolve \
      --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
      --max-connections=500 --innodb-buffer-pool-size=512M --innodb-log-file-size=256M
    wait_for 60 "mariadb on $BIND_HOST:$MYSQL_PORT" mariadb-admin --socket="$RUN_DIR/mysqld.sock" -u root ping ||
      die "mariadb did not start; see $LOG_DIR/mariadb.log"
    admin=(mariadb --socket="$RUN_DIR/mysqld.sock" -u root)
  fi
  "${admin[@]}" <<SQL || die "cannot create database '$MYSQL_DATABASE' and user '$MYSQL_USER' on the existing server; create them or set FCFS_MYSQL_* (see README)"
CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\` CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PASSWORD';
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'localhost' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT ALL PRIVILEGES ON \`$MYSQL_DATABASE\`.* TO '$MYSQL_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`$MYSQL_DATABASE\`.* TO '$MYSQL_USER'@'localhost';
-- Integration tests create throwaway databases beside the main one.
GRANT ALL PRIVILEGES ON \`${MYSQL_DATABASE}_test%\`.* TO '$MYSQL_USER'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
}

# The emulated AWS services the stack uses; an instance without one of them is not reused.
# API Gateway only for fcfs-admin's usage-plan registration test; EventBridge for the event relay's bus.
LOCALSTACK_SERVICES=(sqs dynamodb secretsmanager apigateway events)
localstack_healthy() {
  local health service
  health="$(curl -fsS "http://$BIND_HOST:$AWS_PORT/_localstack/health" 2>/dev/null)" || return 1
  for service in "${LOCALSTACK_SERVICES[@]}"; do
    grep -q "\"$service\": \"\(available\|running\)\"" <<<"$health" || return 1
  done
}

localstack_up() {
  if localstack_healthy; then
    log "localstack: reusing the instance on $BIND_HOST:$AWS_PORT"; return
  fi
  if port_open "$BIND_HOST" "$AWS_PORT" && pid_alive "$RUN_DIR/localstack.pid"; then
    # Ours, from an older checkout that enabled fewer services: start it again with all of them.
    log "localstack: restarting the instance started here, to enable ${LOCALSTACK_SERVICES[*]}"
    stop_pidfile localstack
  fi
  port_open "$BIND_HOST" "$AWS_PORT" &&
    die "port $AWS_PORT is taken by something that is not a LocalStack serving ${LOCALSTACK_SERVICES[*]}; stop it or set FCFS_AWS_PORT"
  mkdir -p "$LOCALSTACK_FS"
  # Host mode (no container): each variable below works around a trap recorded in the README.
  spawn localstack env OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$LOCALSTACK_FS" GATEWAY_SERVER=hypercorn \
    GATEWAY_LISTEN="$BIND_HOST:$AWS_PORT" SERVICES="$(IFS=,; echo "${LOCALSTACK_SERVICES[*]}")" DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 \
    DISABLE_EVENTS=1 LOCALSTACK_HOST="$BIND_HOST:$AWS_PORT" SQS_ENDPOINT_STRATEGY=path \
    DYNAMODB_LOCAL_PORT="$DYNAMODB_LOCAL_PORT" CUSTOM_SSL_CERT_PATH="$CACHE_DIR/localstack-cert.pem" \
    DYNAMODB_IN_MEMORY=1 \
    "$LOCALSTACK_VENV/bin/python" -m localstack.runtime.main
  wait_for 90 "localstack on $BIND_HOST:$AWS_PORT" localstack_healthy ||
    die "localstack did not start; see $LOG_DIR/localstack.log"
}

fauxqs_healthy() { # answers SQS's JSON protocol, not only the port
  curl -fsS -X POST "http://$BIND_HOST:$FAUXQS_PORT/" -H 'content-type: application/x-amz-json-1.0' \
    -H 'x-amz-target: AmazonSQS.ListQueues' -d '{}' 2>/dev/null | grep -q '{'
}

# fauxqs from its pinned npm install, through scripts/fauxqs.mjs so it listens on 127.0.0.1 only.
# Its queues live in memory: a restart forgets them, and `services` provisions them again.
fauxqs_up() {
  if fauxqs_healthy; then
    log "fauxqs: reusing the instance on $BIND_HOST:$FAUXQS_PORT"; return
  fi
  stop_pidfile fauxqs
  port_open "$BIND_HOST" "$FAUXQS_PORT" &&
    die "port $FAUXQS_PORT is taken by something that is not an SQS emulator; stop it or set FCFS_FAUXQS_PORT"
  spawn fauxqs "$FAUXQS_DIR/node_modules/.bin/node" --no-warnings "$ROOT/scripts/fauxqs.mjs" \
    "$FAUXQS_DIR/node_modules/fauxqs" "$FAUXQS_PORT"
  wait_for 30 "fauxqs (SQS) on $BIND_HOST:$FAUXQS_PORT" fauxqs_healthy ||
    die "fauxqs did not start; see $LOG_DIR/fauxqs.log"
}

admin() { "$CARGO_TARGET_DIR/$BUILD_PROFILE/fcfs-admin" "$@"; }

write_env() {
  local env_file="$ENV_FILE"
  {
    echo "# Written by scripts/stack.sh: the variables a local client needs. Source it: set -a; . .local/env; set +a"
    echo "FCFS_AWS=$FCFS_AWS"
    echo "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"
    # SQS on its own emulator (FCFS_AWS=fauxqs); the SDK prefers this to AWS_ENDPOINT_URL for SQS.
    [[ -n ${AWS_ENDPOINT_URL_SQS:-} ]] && echo "AWS_ENDPOINT_URL_SQS=$AWS_ENDPOINT_URL_SQS"
    echo "AWS_REGION=$AWS_REGION"
    echo "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID"
    echo "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
    # For fcfs-admin and the tests; the runner's functions read DATABASE_SECRET_ARN instead.
    echo "DATABASE_URL=$(database_url)"
    # The local MariaDB speaks no TLS; on AWS the template asks for VERIFY_IDENTITY.
    echo "DATABASE_SSL_MODE=DISABLED"
    echo "REDIS_URL=$(redis_url)"
    # cargo-lambda's Runtime API emulator, for tests that run a function's real Lambda binary.
    echo "CARGO_LAMBDA=$CARGO_LAMBDA_VENV/bin/cargo-lambda"
    # The jar install.sh prepared, for tests that start a private DynamoDB Local to pause or kill.
    echo "DYNAMODB_LOCAL_JAR=$LOCALSTACK_FS/var/lib/localstack/lib/dynamodb-local/2/DynamoDBLocal.jar"
    # For the tests that run the ledger on a Redis Cluster, on TLS and on both; nothing else reads
    # them.
    echo "REDIS_CLUSTER_URL=$(redis_cluster_url)"
    echo "REDIS_TLS_URL=$(redis_tls_url)"
    echo "REDIS_TLS_CA_FILE=$REDIS_TLS_DIR/ca.crt"
    # The TLS-only cluster announcing hostnames (ElastiCache Serverless); its CA is the one above.
    echo "REDIS_TLS_CLUSTER_URL=$(redis_tls_cluster_url)"
    echo "FCFS_STAGE=$STAGE"
    # Partner events locally: webhooks may go to loopback over http (make up, the tests), and the
    # runner starts the relay at once; each run ends before the next minute's tick.
    echo "WEBHOOK_ALLOW_LOOPBACK=true"
    echo "FCFS_SCHEDULE_START_NOW=EventRelayFunction"
    echo "EVENT_RELAY_RUN_SECONDS=58"
    # So that `fcfs-admin` is a command once this file is sourced.
    echo "PATH=$STATE_DIR/bin:\$PATH"
    cat "$RESOURCES_FILE"
  } >"$env_file.tmp"
  mv "$env_file.tmp" "$env_file"
}

cmd_services() {
  "$ROOT/scripts/install.sh"
  local_aws_env
  redis_up
  redis_cluster_up
  redis_tls_up
  redis_tls_cluster_up
  mysql_up
  localstack_up
  [[ $FCFS_AWS == fauxqs ]] && fauxqs_up
  local profile_flag=()
  [[ $BUILD_PROFILE == release ]] && profile_flag=(--release)
  # The release build of a fresh checkout takes a while on 2 cores (README, "Running it locally").
  log "building fcfs-admin and fcfs-runner ($BUILD_PROFILE)"
  cargo build -q "${profile_flag[@]}" -p fcfs-admin -p local-runner
  mkdir -p "$STATE_DIR/bin"
  ln -sf "$CARGO_TARGET_DIR/$BUILD_PROFILE/fcfs-admin" "$STATE_DIR/bin/fcfs-admin"
  ln -sf "$CARGO_TARGET_DIR/$BUILD_PROFILE/fcfs-runner" "$STATE_DIR/bin/fcfs-runner"
  export DATABASE_URL; DATABASE_URL="$(database_url)"
  admin migrate
  # The events' sealing key outlives LocalStack (which forgets its secrets on restart), as the
  # sealed webhook secrets in MariaDB's data do: a new key would leave every one unopenable.
  local events_key="$DATA_DIR/events-sealing-key"
  if [[ ! -s $events_key ]]; then
    mkdir -p "$DATA_DIR"
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$events_key")
  fi
  export FCFS_EVENTS_KEY_MATERIAL_FILE="$events_key"
  admin provision --template "$ROOT/template.yaml" --param "Stage=$STAGE" >"$RESOURCES_FILE.tmp"
  # The functions take database credentials only from a secret, as on AWS.
  admin database-secret --name "fcfs-$STAGE-database" >>"$RESOURCES_FILE.tmp"
  mv "$RESOURCES_FILE.tmp" "$RESOURCES_FILE"
  write_env
}

api_url() { echo "http://$BIND_HOST:$API_PORT"; }

runner_up() {
  # Always a fresh runner, so it serves the code just built.
  stop_pidfile runner
  if port_open "$BIND_HOST" "$API_PORT"; then
    die "port $API_PORT is taken by another program: stop it or set FCFS_API_PORT"
  fi
  (
    set -a
    # shellcheck disable=SC1091
    source "$ENV_FILE"
    set +a
    # Without DATABASE_URL the functions read their credentials from the (local) Secrets Manager.
    unset DATABASE_URL
    # A log line per request would cost more than the request under load; RUST_LOG=info shows them.
    RUST_LOG="${RUST_LOG:-info,local_runner::gateway=warn}" \
      FCFS_API_HOST="$BIND_HOST" FCFS_API_PORT="$API_PORT" spawn runner "$STATE_DIR/bin/fcfs-runner" --template "$ROOT/template.yaml"
  )
  wait_for 60 "runner on $(api_url)" port_open "$BIND_HOST" "$API_PORT" ||
    die "the runner did not start; see $LOG_DIR/runner.log"
}

# observability/*.yml with each ${NAME} replaced: render FILE NAME=VALUE...
render() {
  local text pair; text="$(<"$1")"; shift
  for pair in "$@"; do text="${text//"\${${pair%%=*}}"/"${pair#*=}"}"; done
  printf '%s\n' "$text"
}

prometheus_url() { echo "http://$BIND_HOST:$PROMETHEUS_PORT"; }
alertmanager_url() { echo "http://$BIND_HOST:$ALERTMANAGER_PORT"; }

# Prometheus scraping the runner with observability/alerts.yml, and Alertmanager routing to Discord
# when DISCORD_WEBHOOK_URL is set. Restarted with the runner, so they follow the checkout's rules.
monitoring_up() {
  stop_pidfile prometheus
  stop_pidfile alertmanager
  local port
  for port in "$PROMETHEUS_PORT" "$ALERTMANAGER_PORT"; do
    port_open "$BIND_HOST" "$port" &&
      die "port $port is taken by another program: stop it or set FCFS_PROMETHEUS_PORT / FCFS_ALERTMANAGER_PORT"
  done
  local dir="$STATE_DIR/monitoring" receiver=ui-only level=info
  mkdir -p "$dir" "$DATA_DIR/prometheus" "$DATA_DIR/alertmanager"
  render "$ROOT/observability/prometheus.yml" INTERVAL=5s RULES="$ROOT/observability/alerts.yml" \
    ALERTMANAGER="$BIND_HOST:$ALERTMANAGER_PORT" RUNNER="$BIND_HOST:$API_PORT" >"$dir/prometheus.yml"
  (
    umask 077 # the webhook URL is a credential
    if [[ -n ${DISCORD_WEBHOOK_URL:-} ]]; then
      receiver=discord
      render "$ROOT/observability/alertmanager.yml" RECEIVER=$receiver GROUP_WAIT=10s GROUP_INTERVAL=1m \
        DISCORD_WEBHOOK_URL="$DISCORD_WEBHOOK_URL" >"$dir/alertmanager.yml"
    else
      render "$ROOT/observability/alertmanager.yml" RECEIVER=$receiver GROUP_WAIT=10s GROUP_INTERVAL=1m |
        sed '/# discord-begin/,/# discord-end/d' >"$dir/alertmanager.yml"
    fi
  )
  # Without a webhook the alerts are only in the UI, and in the log at debug level.
  [[ -n ${DISCORD_WEBHOOK_URL:-} ]] || level=debug
  spawn alertmanager prometheus-alertmanager --config.file="$dir/alertmanager.yml" \
    --storage.path="$DATA_DIR/alertmanager" --web.listen-address="$BIND_HOST:$ALERTMANAGER_PORT" \
    --cluster.listen-address= --web.external-url="$(alertmanager_url)" --log.level=$level
  spawn prometheus prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$DATA_DIR/prometheus" \
    --web.listen-address="$BIND_HOST:$PROMETHEUS_PORT" --web.external-url="$(prometheus_url)" \
    --storage.tsdb.retention.time=7d
  wait_for 30 "alertmanager on $(alertmanager_url)" curl -fsS "$(alertmanager_url)/-/ready" ||
    die "alertmanager did not start; see $LOG_DIR/alertmanager.log"
  wait_for 30 "prometheus on $(prometheus_url)" curl -fsS "$(prometheus_url)/-/ready" ||
    die "prometheus did not start; see $LOG_DIR/prometheus.log"
}

demo() {
  local key url
  url="$(api_url)"
  key="$(set -a; source "$ENV_FILE"; set +a; admin keys create --partner demo-partner)" ||
    die "cannot create the demo API key"
  (umask 077; echo "$key" >"$STATE_DIR/demo-api-key")
  cat <<EOF

The API is served at $url (logs: $LOG_DIR/runner.log).
Demo API key for partner demo-partner (also in .local/demo-api-key):
  $key

Create a campaign and issue a coupon from it (paste as one line):
  ID=\$(curl -s -X POST $url/v1/campaigns -H "X-API-KEY: $key" -H 'content-type: application/json' -d '{"name":"demo","totalQuantity":100,"issueStartsAt":"2020-01-01T00:00:00Z","issueEndsAt":"2099-01-01T00:00:00Z","couponExpiresAt":"2099-12-31T00:00:00Z","discount":{"type":"AMOUNT","value":1000}}' | sed -E 's/.*"campaignId":"([0-9]+)".*/\1/') && echo "campaign \$ID" && curl -s -X POST $url/v1/campaigns/\$ID/issues -H "X-API-KEY: $key" -d '{"userId":"alice"}'; echo
Then, a moment later (the writer's poller records it):
  curl -s $url/v1/campaigns/\$ID/issues/alice -H "X-API-KEY: $key"; echo

Stop everything with: make down
EOF
}

cmd_up() {
  cmd_services
  runner_up
  monitoring_up
  cmd_status
  demo
}

stop_pidfile() { # stop_pidfile NAME
  local file="$RUN_DIR/$1.pid"
  [[ -f "$file" ]] || return 0
  local pid; pid="$(cat "$file")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $1 (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.3; done
    # One LocalStack shutdown was seen to hang for minutes: do not wait for it.
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

cmd_down() {
  local name
  for name in prometheus alertmanager runner localstack fauxqs mariadb redis redis-tls; do stop_pidfile "$name"; done
  for name in "$RUN_DIR"/redis-cluster-*.pid "$RUN_DIR"/redis-tls-cluster-*.pid; do
    [[ -f "$name" ]] && stop_pidfile "$(basename "$name" .pid)"
  done
  log "down: nothing started by this checkout is running"
}

cmd_status() {
  local mine
  status_line() { # NAME URL HEALTHY? [PID-FILE NAME]
    local pidfile="$RUN_DIR/${4:-$1}.pid"
    mine="reused"; pid_alive "$pidfile" && mine="started here, pid $(cat "$pidfile")"
    if [[ $3 == yes ]]; then printf '  %-17s %-40s up (%s)\n' "$1" "$2" "$mine"; else printf '  %-17s %-40s DOWN\n' "$1" "$2"; fi
  }
  local r=no m=no l=no c=no t=no tc=no
  redis-cli -h "$BIND_HOST" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && r=yes
  redis_cluster_ok && c=yes
  redis_tls_ping && t=yes
  redis_tls_cluster_ok && tc=yes
  port_open "$BIND_HOST" "$MYSQL_PORT" && m=yes
  localstack_healthy && l=yes
  local a=no
  pid_alive "$RUN_DIR/runner.pid" && port_open "$BIND_HOST" "$API_PORT" && a=yes
  echo "fcfs-coupons local stack:"
  status_line redis "$(redis_url)" $r
  status_line redis-cluster "$(redis_cluster_url) (${#REDIS_CLUSTER_PORTS[@]} masters: ${REDIS_CLUSTER_PORTS[*]})" $c "redis-cluster-${REDIS_CLUSTER_PORTS[0]}"
  status_line redis-tls "$(redis_tls_url) (CA: REDIS_TLS_CA_FILE)" $t
  status_line redis-tls-cluster "$(redis_tls_cluster_url) (TLS only, ${#REDIS_TLS_CLUSTER_PORTS[@]} masters announced as $REDIS_TLS_CLUSTER_HOST: ${REDIS_TLS_CLUSTER_PORTS[*]})" $tc "redis-tls-cluster-${REDIS_TLS_CLUSTER_PORTS[0]}"
  status_line mariadb "$(database_url)" $m
  local f=no what="DynamoDB, Secrets Manager, API Gateway"
  fauxqs_healthy && f=yes
  [[ $FCFS_AWS == localstack ]] && what="SQS, $what"
  status_line localstack "http://$BIND_HOST:$AWS_PORT ($what)" $l
  [[ $FCFS_AWS == fauxqs || $f == yes ]] && status_line fauxqs "http://$BIND_HOST:$FAUXQS_PORT (SQS; FCFS_AWS=$FCFS_AWS)" $f
  status_line runner "$(api_url) (the API; $(api_url)/metrics, $(api_url)/dashboard)" $a
  local p=no am=no
  curl -fsS "$(prometheus_url)/-/ready" >/dev/null 2>&1 && p=yes
  curl -fsS "$(alertmanager_url)/-/ready" >/dev/null 2>&1 && am=yes
  status_line prometheus "$(prometheus_url) (alerts: $(prometheus_url)/alerts)" $p
  # Whether the running Alertmanager was configured with a webhook (at `make up`).
  local discord=off
  grep -q '^  receiver: discord' "$STATE_DIR/monitoring/alertmanager.yml" 2>/dev/null && discord=on
  status_line alertmanager "$(alertmanager_url) (Discord: $discord)" $am
  [[ -f "$ENV_FILE" ]] && echo "  client environment: $ENV_FILE (set -a; . $ENV_FILE; set +a)"
  if [[ -f "$RESOURCES_FILE" ]]; then sed 's/^/    /' "$RESOURCES_FILE"; fi
}

case "${1:-}" in
  up) BUILD_PROFILE="${FCFS_BUILD_PROFILE:-release}"; cmd_up ;;
  services) cmd_services; cmd_status ;;
  down) cmd_down ;;
  status)
    # Say what the written environment chose, not this shell's default.
    [[ -f "$ENV_FILE" ]] && FCFS_AWS="$(sed -n 's/^FCFS_AWS=//p' "$ENV_FILE")" && FCFS_AWS="${FCFS_AWS:-localstack}"
    local_aws_env; cmd_status ;;
  *) die "usage: $0 up|services|down|status" ;;
esac
