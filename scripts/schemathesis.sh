#!/usr/bin/env bash
# Contract test: Schemathesis drives docs/openapi.yaml against a fresh fcfs-runner and fails on any
# server error, undocumented status, wrong content type, response that breaks its schema, or
# invalid input that is accepted. Exit code = result.
#
#   scripts/schemathesis.sh [RUNNER_BIN [ADMIN_BIN]]
#
# Needs the services up and $STATE_DIR/env written (`scripts/stack.sh services`). The binaries
# default to $CARGO_TARGET_DIR/debug/fcfs-runner and .../fcfs-admin. Knobs: FCFS_ST_MAX_EXAMPLES
# (per operation and phase, default 100), FCFS_ST_SEED (default 20261123), FCFS_ST_DEADLINE (seconds
# for the whole Schemathesis run, default 480). One worker: Python 3.11.7's `ast` is not thread-safe
# (CPython gh-106905) and Hypothesis parses lambdas while it builds strategies, so two workers fail
# at random with "AST constructor recursion depth mismatch".
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

runner_bin="${1:-$CARGO_TARGET_DIR/debug/fcfs-runner}"
admin_bin="${2:-$CARGO_TARGET_DIR/debug/fcfs-admin}"
max_examples="${FCFS_ST_MAX_EXAMPLES:-100}"
seed="${FCFS_ST_SEED:-20261123}"
deadline="${FCFS_ST_DEADLINE:-480}"
spec="$ROOT/docs/openapi.yaml"

[[ -x "$runner_bin" ]] || die "no runner binary at $runner_bin (cargo build -p local-runner, or pass it as \$1)"
[[ -x "$admin_bin" ]] || die "no fcfs-admin binary at $admin_bin (cargo build -p fcfs-admin, or pass it as \$2)"
[[ -f "$ENV_FILE" ]] || die "no $ENV_FILE: start the services first (scripts/stack.sh services)"
set -a
# shellcheck disable=SC1091
source "$ENV_FILE"
set +a

# Installs the pinned Schemathesis venv if missing (a no-op when everything is present).
"$ROOT/scripts/install.sh"
schemathesis="$SCHEMATHESIS_VENV/bin/schemathesis"
[[ -x "$schemathesis" ]] || die "Schemathesis is not installed in $SCHEMATHESIS_VENV"

mkdir -p "$LOG_DIR"
work="$(mktemp -d)"
runner_pid=""
cleanup() {
  local status=$?
  # `timeout` signals Schemathesis in turn.
  if [[ -s "$work/schemathesis.pid" ]]; then kill -TERM "$(cat "$work/schemathesis.pid")" 2>/dev/null || true; fi
  if [[ -n "$runner_pid" ]] && kill -0 "$runner_pid" 2>/dev/null; then
    # SIGTERM: the runner finishes in-flight requests and batches; after 15 s it is killed.
    kill -TERM "$runner_pid" 2>/dev/null || true
    local until=$((SECONDS + 15))
    while kill -0 "$runner_pid" 2>/dev/null && ((SECONDS < until)); do sleep 0.2; done
    kill -KILL "$runner_pid" 2>/dev/null || true
    wait "$runner_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port nobody listens on (the kernel picks it; the moment between closing and binding is short).
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://$BIND_HOST:$port"
runner_log="$LOG_DIR/schemathesis-runner.log"
log "starting $runner_bin on $url (log: $runner_log)"
# Unthrottled: a 429 from a burst of generated cases would be the client's pace, not the contract.
FCFS_API_HOST="$BIND_HOST" FCFS_API_PORT="$port" \
  "$runner_bin" --template "$ROOT/template.yaml" --param "Stage=$STAGE" --no-throttle >"$runner_log" 2>&1 &
runner_pid=$!
runner_ready() { kill -0 "$runner_pid" 2>/dev/null && port_open "$BIND_HOST" "$port"; }
if ! wait_for 60 "runner on $url" runner_ready; then
  tail -n 20 "$runner_log" >&2 || true
  die "the runner did not start; see $runner_log"
fi

# A partner of its own per run: campaigns an earlier run left (whose Redis state a restart may have
# lost) belong to someone else and answer 404, so runs cannot see each other.
partner="schemathesis-$(date +%s)-$$"
key="$("$admin_bin" keys create --partner "$partner")" || die "cannot create an API key"

# api METHOD PATH [BODY]: prints "STATUS BODY"; every request has a deadline.
api() {
  local out
  out="$(curl -sS --max-time 10 -o - -w '\n%{http_code}' -X "$1" "$url$2" -H "X-API-KEY: $key" \
    -H 'content-type: application/json' ${3:+--data "$3"})" || return 1
  printf '%s %s\n' "${out##*$'\n'}" "${out%$'\n'*}"
}
campaign() { # campaign NAME QUANTITY STARTS ENDS: prints the new campaign's id
  local reply status
  reply="$(api POST /v1/campaigns "{\"name\":\"$1\",\"totalQuantity\":$2,\"issueStartsAt\":\"$3\",\"issueEndsAt\":\"$4\",\"couponExpiresAt\":\"2099-12-31T00:00:00Z\",\"discount\":{\"type\":\"AMOUNT\",\"value\":500}}")" ||
    die "cannot reach $url"
  status="${reply%% *}"
  [[ $status == 201 ]] || die "creating campaign $1 answered $reply"
  python3 -c 'import json, sys; print(json.loads(sys.argv[1])["campaignId"])' "${reply#* }"
}
# Real campaigns, one per answer the issue route can give: open, not open yet, ended, sold out.
open_id="$(campaign "schemathesis open" 10000000 2020-01-01T00:00:00Z 2099-01-01T00:00:00Z)"
future_id="$(campaign "schemathesis not open" 10 2098-01-01T00:00:00Z 2099-01-01T00:00:00Z)"
ended_id="$(campaign "schemathesis ended" 10 2020-01-01T00:00:00Z 2021-01-01T00:00:00Z)"
sold_id="$(campaign "schemathesis sold out" 1 2020-01-01T00:00:00Z 2099-01-01T00:00:00Z)"
reply="$(api POST "/v1/campaigns/$sold_id/issues" '{"userId":"first"}')" || die "cannot reach $url"
[[ ${reply%% *} == 202 ]] || die "issuing the only coupon of campaign $sold_id answered $reply"
log "campaigns: open $open_id, not open $future_id, ended $ended_id, sold out $sold_id"

# create PATH BODY FIELD [KEY]: POSTs BODY (with KEY as its Idempotency-Key, if given), requires a
# 201 and prints the created resource's FIELD.
create() {
  local out status
  out="$(curl -sS --max-time 10 -o - -w '\n%{http_code}' -X POST "$url$1" -H "X-API-KEY: $key" \
    -H 'content-type: application/json' ${4:+-H "Idempotency-Key: $4"} --data "$2")" || die "cannot reach $url"
  status="${out##*$'\n'}"
  [[ $status == 201 ]] || die "POST $1 answered $status ${out%$'\n'*}"
  python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "${out%$'\n'*}" "$3"
}
# Real point transactions for the cancel route: an EARN (not cancellable), a USE (cancellable once).
earn_id="$(create /v1/users/schemathesis/points/earn '{"amount":1000,"reason":"schemathesis"}' transactionId "earn-$partner")"
use_id="$(create /v1/users/schemathesis/points/use '{"amount":10,"orderId":"schemathesis"}' transactionId "use-$partner")"
log "point transactions: earn $earn_id, use $use_id"
# A real checkout hold for its routes (10 of the earned points), so that half their cases reach
# a hold instead of a 404: fuzzing steers towards answers an operation accepts, and with none to
# find it spent minutes per hold route generating cases.
hold_id="$(create /v1/checkout/holds '{"userId":"schemathesis","orderId":"schemathesis-hold","orderAmount":5000,"points":10}' holdId)"
log "checkout hold: $hold_id"

# Half the generated campaign ids are these real ones (positive cases only; negative cases draw
# values outside the schema). The issue route's business answers (409, 410, 422) are valid-data
# outcomes; every positive campaign must be created, since the hooks put its dates in order
# (scripts/schemathesis_hooks.py). 413 is a correct rejection of oversized invalid data.
cat >"$work/schemathesis.toml" <<TOML
# Every run stands alone: no crashes replayed from an earlier run.
[cache]
enabled = false

[dictionaries.campaigns]
values = [$open_id, $future_id, $ended_id, $sold_id]

[dictionaries.point_transactions]
values = [$earn_id, $use_id]

[dictionaries.holds]
values = [$hold_id]

[parameters]
"path.campaignId" = { dictionary = "campaigns", probability = 0.5 }
"path.transactionId" = { dictionary = "point_transactions", probability = 0.5 }
"path.holdId" = { dictionary = "holds", probability = 0.5 }

[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 413]

[[operations]]
include-operation-id = "createCampaign"
checks.positive_data_acceptance.expected-statuses = [201]

[[operations]]
include-operation-id = "getCampaign"
checks.positive_data_acceptance.expected-statuses = [200, 404]

# A campaign may be paused by a generated change (423), or changed to end sooner (422 ENDED).
[[operations]]
include-operation-id = "issueCoupon"
checks.positive_data_acceptance.expected-statuses = [202, 404, 409, 410, 422, 423]

[[operations]]
include-operation-id = "listCampaigns"
checks.positive_data_acceptance.expected-statuses = [200, 400]

# A generated change may break a rule JSON Schema cannot state (an end before the start or after
# the coupons expire, 400), lower the quantity below what is taken (409), or name no campaign.
[[operations]]
include-operation-id = "changeCampaign"
checks.positive_data_acceptance.expected-statuses = [200, 400, 404, 409]

[[operations]]
include-operation-id = "getIssueStatus"
checks.positive_data_acceptance.expected-statuses = [200, 404]

# A cursor is valid only if this route made it: a generated one is a correct 400.
[[operations]]
include-operation-id = "listUserCoupons"
checks.positive_data_acceptance.expected-statuses = [200, 400]

[[operations]]
include-operation-id = "getCoupon"
checks.positive_data_acceptance.expected-statuses = [200, 404]

[[operations]]
include-operation-id = "useCoupon"
checks.positive_data_acceptance.expected-statuses = [200, 404, 409, 410]

[[operations]]
include-operation-id = "cancelCouponUse"
checks.positive_data_acceptance.expected-statuses = [200, 404, 409]

# Points: every positive write has a key of its own (scripts/schemathesis_hooks.py); a generated
# user has no points (409), and a generated transaction id is another's or none (404).
[[operations]]
include-operation-id = "earnPoints"
checks.positive_data_acceptance.expected-statuses = [201]

[[operations]]
include-operation-id = "usePoints"
checks.positive_data_acceptance.expected-statuses = [201, 409]

[[operations]]
include-operation-id = "cancelPointsTransaction"
checks.positive_data_acceptance.expected-statuses = [200, 404, 409]

[[operations]]
include-operation-id = "transferPoints"
checks.positive_data_acceptance.expected-statuses = [201, 409]

[[operations]]
include-operation-id = "getPoints"
checks.positive_data_acceptance.expected-statuses = [200]

[[operations]]
include-operation-id = "getPointsHistory"
checks.positive_data_acceptance.expected-statuses = [200, 400]

# Checkout: a generated coupon is nobody's (404) or another's, used, held or expired (409, 410);
# points JSON Schema cannot tie to the order's amount left, or neither coupon nor points, are a
# correct 400; a generated user has no points (409); a generated hold id is none (404), and a
# hold settled the other way is 409, an ended one 410.
[[operations]]
include-operation-id = "previewCheckout"
checks.positive_data_acceptance.expected-statuses = [200]

[[operations]]
include-operation-id = "placeCheckoutHold"
checks.positive_data_acceptance.expected-statuses = [200, 201, 400, 404, 409, 410]

[[operations]]
include-operation-id = "getCheckoutHold"
checks.positive_data_acceptance.expected-statuses = [200, 404]

[[operations]]
include-operation-id = "confirmCheckoutHold"
checks.positive_data_acceptance.expected-statuses = [200, 404, 409, 410]

[[operations]]
include-operation-id = "releaseCheckoutHold"
checks.positive_data_acceptance.expected-statuses = [200, 404, 409]

# Grading: generated orders may reuse an id with other content (409) or have a status changed
# before the order was made, which JSON Schema cannot forbid (400); generated tiers may repeat
# a grade or an amount (400), or name no campaign of the partner's (422); a policy read before
# any is 404, a run before any policy 409, a run of a month not over 422, a grade before any
# finished run 404.
[[operations]]
include-operation-id = "recordOrders"
checks.positive_data_acceptance.expected-statuses = [200, 400, 409]

[[operations]]
include-operation-id = "getGradingPolicy"
checks.positive_data_acceptance.expected-statuses = [200, 404]

[[operations]]
include-operation-id = "putGradingPolicy"
checks.positive_data_acceptance.expected-statuses = [200, 400, 422]

[[operations]]
include-operation-id = "startGradingRun"
checks.positive_data_acceptance.expected-statuses = [202, 409, 422]

[[operations]]
include-operation-id = "getGradingRun"
checks.positive_data_acceptance.expected-statuses = [200, 404]

[[operations]]
include-operation-id = "getUserGrade"
checks.positive_data_acceptance.expected-statuses = [200, 404]

# Events: a generated URL is refused (422 WEBHOOK_URL_REFUSED: not https, a non-public address or a
# name that does not resolve) unless it is a loopback http(s) URL the runner's local setting allows;
# an invalid URL the document's pattern cannot tell from a refused one (a scheme the URL parser
# repairs) may be 422 too. Before a registration (or after a generated DELETE) the webhook routes
# are 404.
[[operations]]
include-operation-id = "putWebhook"
checks.positive_data_acceptance.expected-statuses = [200, 201, 422]
checks.negative_data_rejection.expected-statuses = [400, 401, 403, 404, 413, 422]

[[operations]]
include-operation-id = "getWebhook"
checks.positive_data_acceptance.expected-statuses = [200, 404]

[[operations]]
include-operation-id = "deleteWebhook"
checks.positive_data_acceptance.expected-statuses = [204, 404]

[[operations]]
include-operation-id = "rotateWebhookSecret"
checks.positive_data_acceptance.expected-statuses = [200, 404]

[[operations]]
include-operation-id = "listEvents"
checks.positive_data_acceptance.expected-statuses = [200]
TOML

st_cmd=(
  "$schemathesis" --config-file "$work/schemathesis.toml" run "$spec"
  --url "$url" -H "X-API-KEY: $key"
  --checks all
  --max-examples "$max_examples" --seed "$seed" --generation-database none
  --workers 1 --request-timeout 10 --no-color --continue-on-failure
  --report junit --report-junit-path "$LOG_DIR/schemathesis-junit.xml"
)
log "schemathesis run docs/openapi.yaml --url $url -H 'X-API-KEY: …' --checks all --max-examples $max_examples --seed $seed"
# From the scratch directory (Schemathesis and Hypothesis leave their caches in the working one), in
# the background so that a signal to this script is handled at once (cleanup stops it).
(
  cd "$work"
  SCHEMATHESIS_TELEMETRY=false SCHEMATHESIS_HOOKS="$ROOT/scripts/schemathesis_hooks.py" \
    timeout --kill-after=10 "$deadline" "${st_cmd[@]}" &
  echo $! >"$work/schemathesis.pid"
  wait $!
  echo $? >"$work/schemathesis.status"
) 2>&1 | tee "$work/output.txt" &
wait $! || true
st_status="$(cat "$work/schemathesis.status" 2>/dev/null || echo 1)"
((st_status != 124 && st_status != 137)) || log "schemathesis did not finish within ${deadline}s"

cases="$(sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' "$work/output.txt" | tail -n 1)"
requests="$(python3 - "$runner_log" <<'PY'
import collections, json, sys
statuses = collections.Counter()
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        fields = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if fields.get("message") == "request":
        statuses[fields.get("status")] += 1
print(sum(statuses.values()), "(" + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())) + ")")
PY
)"
log "test cases run: ${cases:-unknown}; requests the runner answered: $requests"
((st_status == 0)) || die "schemathesis failed (exit $st_status); runner log: $runner_log"
log "schemathesis: the API conforms to docs/openapi.yaml"
