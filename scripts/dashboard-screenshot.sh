#!/usr/bin/env bash
# Screenshot of the runner's dashboard with headless Chromium (1280x900), in real time: the page
# polls /metrics for SECONDS of the wall clock before the shot, so its charts show what the runner
# did meanwhile (a `--screenshot` run would fast-forward the page's timers instead).
#
#   scripts/dashboard-screenshot.sh URL OUT.png [SECONDS]     (e.g. http://127.0.0.1:3000/dashboard)
#
# Drives Chromium over its DevTools protocol from Node (WebSocket behind --experimental-websocket
# in Node 20). Exits 2 if Chromium or Node is missing, 1 if no PNG was written.
# CHROMIUM=/path/to/binary overrides the browser.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 URL OUT.png [SECONDS]" >&2
  exit 64
fi
url=$1 out=$2 seconds=${3:-30}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "SECONDS must be a whole number, got '$seconds'" >&2; exit 64; }
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[[ -n $browser && -x $browser ]] ||
  { echo "chromium not found: install Debian's chromium package (apt-get install chromium)" >&2; exit 2; }
command -v node >/dev/null || { echo "node not found: install Debian's nodejs package" >&2; exit 2; }

profile=$(mktemp -d)
log=$(mktemp)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$profile" "$log"; }
trap cleanup EXIT

# The flags a closed network needs (no background connections to Google); no sandbox as root.
flags=(--headless --disable-gpu --disable-quic --no-first-run --disable-background-networking
  --disable-component-update --disable-sync --user-data-dir="$profile" --window-size=1280,900
  --remote-debugging-address=127.0.0.1 --remote-debugging-port=0)
[[ $EUID -eq 0 ]] && flags+=(--no-sandbox)
"$browser" "${flags[@]}" about:blank >"$log" 2>&1 &
pid=$!
for _ in $(seq 100); do [[ -s $profile/DevToolsActivePort ]] && break; sleep 0.1; done
[[ -s $profile/DevToolsActivePort ]] || { echo "chromium did not start; its log:" >&2; tail -n 20 "$log" >&2; exit 1; }
port=$(head -n1 "$profile/DevToolsActivePort")

rm -f "$out"
PORT=$port PAGE=$url OUT=$out SECONDS_=$seconds timeout $((seconds + 60)) node --experimental-websocket --no-warnings - <<'JS'
const { PORT, PAGE, OUT, SECONDS_ } = process.env;
(async () => {
  const pages = await (await fetch(`http://127.0.0.1:${PORT}/json/list`)).json();
  const ws = new WebSocket(pages.find(p => p.type === "page").webSocketDebuggerUrl);
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
  let id = 0; const waiting = new Map();
  ws.onmessage = m => { const r = JSON.parse(m.data); if (waiting.has(r.id)) { waiting.get(r.id)(r); waiting.delete(r.id); } };
  const call = (method, params = {}) => new Promise(ok => { waiting.set(++id, ok); ws.send(JSON.stringify({ id, method, params })); });
  await call("Page.enable");
  await call("Page.navigate", { url: PAGE });
  await new Promise(ok => setTimeout(ok, Number(SECONDS_) * 1000));
  // The whole page, not just the window's first screen.
  const { result: { cssContentSize: size } } = await call("Page.getLayoutMetrics");
  await call("Emulation.setDeviceMetricsOverride", { width: 1280, height: Math.ceil(size.height), deviceScaleFactor: 1, mobile: false });
  const shot = await call("Page.captureScreenshot", { format: "png" });
  if (!shot.result) throw new Error(JSON.stringify(shot));
  require("fs").writeFileSync(OUT, Buffer.from(shot.result.data, "base64"));
  ws.close();
})().catch(e => { console.error(e); process.exit(1); });
JS
[[ -s $out ]] || { echo "no screenshot written" >&2; exit 1; }
echo "wrote $out"
