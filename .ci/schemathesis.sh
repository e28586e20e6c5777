#!/usr/bin/env bash
# API conformance: schemathesis against a real relay, from the committed OpenAPI document.
# Checks: no 5xx, and every response matches the schema. Bounded: SCHEMATHESIS_EXAMPLES
# examples per operation (CI: 25; long mode in docs/THREAT-MODEL.md: 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SCHEMATHESIS_VENV:-$HOME/.cache/samizdat-schemathesis}"
if [ ! -x "$VENV/bin/st" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q schemathesis==4.32.5
fi
BIN="${SAMIZDAT_BIN:-target/debug/samizdat}"
[ -x "$BIN" ] || cargo build -q -p samizdat
DATA="$(mktemp -d)"
CONF="$DATA/relay.toml"
# Rate limits off for the fuzzer: it creates thousands of objects from one address.
printf '[limits]\nclaims_per_ip_per_minute = 1000000\ncreations_per_ip_per_minute = 1000000\ndrops_per_ip_per_minute = 1000000\ndrops_per_mailbox_per_minute = 1000000\nclaims_per_mailbox_per_minute = 1000000\n' > "$CONF"
"$BIN" relay --allow-root --listen 127.0.0.1:0 --data "$DATA/db" --config "$CONF" > "$DATA/out" 2> "$DATA/log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 50); do grep -q "listening on" "$DATA/out" 2>/dev/null && break; sleep 0.1; done
URL="$(sed -n 's/^relay listening on //p' "$DATA/out")"
echo "schemathesis against $URL"
"$VENV/bin/st" run docs/openapi.json --url "$URL" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" --seed 20261126 --exclude-path /v1/ws \
  --warnings off
# The relay must still be alive and healthy after the run.
kill -0 $PID
curl -fsS "$URL/healthz" > /dev/null
if grep -qi "panicked" "$DATA/log"; then echo "relay panicked"; exit 1; fi
echo "schemathesis: relay healthy after the run"
