#!/usr/bin/env bash
# OpenAPI checks against a live server (run by .ci/run after the tests; runs alone too):
#   1. openapi-spec-validator: /v1/openapi.json is a valid OpenAPI 3.1 document;
#   2. Schemathesis: generated requests (bounded) to a fresh `satchel serve` (scripted backend,
#      SQLite in a temp dir, a free port, the development account's secret key) must get no 5xx
#      and only documented statuses with bodies matching their schemas.
# The Python tools live in a venv under target/ (created once, reused).
# The live event stream (GET /v1/wallet/{key}/events, text/event-stream) never ends by itself,
# so Schemathesis would wait on it until its timeout: it is excluded here, and tested in
# crates/server/tests/events.rs.
# One worker: with two, Hypothesis parses lambda sources with `ast` from two threads at once,
# and CPython 3.11 (Debian's) can fail that with "AST constructor recursion depth mismatch",
# an error in the tool, not in the API. The tool versions are pinned so a run is repeatable.
# Knobs: OPENAPI_MAX_EXAMPLES (default 10 per operation), OPENAPI_TIMEOUT_SECS (default 150).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/openapi-venv
MAX_EXAMPLES="${OPENAPI_MAX_EXAMPLES:-10}"
TIMEOUT_SECS="${OPENAPI_TIMEOUT_SECS:-150}"

echo "== openapi: tools"
if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1 \
  || ! "$VENV/bin/openapi-spec-validator" --help >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    'openapi-spec-validator==0.9.0' 'schemathesis==4.32.5' 'hypothesis==6.170.29'
fi
"$VENV/bin/schemathesis" --version

echo "== openapi: server"
cargo build --quiet -p satchel --bin satchel
WORK="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
SATCHEL_LISTEN="127.0.0.1:$PORT" SATCHEL_DATA_DIR="$WORK/data" SATCHEL_BACKEND=scripted \
  SATCHEL_NETWORK=regtest SATCHEL_PAYMENT_WAIT_SECS=1 SATCHEL_METRICS_LISTEN= RUST_LOG="${RUST_LOG:-warn}" \
  target/debug/satchel serve >"$WORK/stdout" 2>"$WORK/stderr" </dev/null &
SERVER_PID=$!
cleanup() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fsS "$BASE/v1/openapi.json" -o "$WORK/openapi.json" 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/stderr"; exit 1; }
  sleep 0.2
done
SAK="$(sed -n 's/^  secret key (sak): //p' "$WORK/stdout")"
if [ -z "$SAK" ]; then
  echo "no development secret key printed by satchel serve"; cat "$WORK/stdout" "$WORK/stderr"; exit 1
fi

echo "== openapi: openapi-spec-validator"
"$VENV/bin/openapi-spec-validator" "$WORK/openapi.json"

echo "== openapi: schemathesis ($MAX_EXAMPLES examples per operation, at most ${TIMEOUT_SECS}s)"
# `fields=` trims each item to the named fields, so a response to a random `fields` cannot
# carry the schema's required fields: the run pins it to "" (no filter). Everything else is
# generated from the document.
cat >"$WORK/schemathesis.toml" <<TOML
[parameters]
"query.fields" = ""
TOML
status=0
timeout --signal=INT "$TIMEOUT_SECS" \
  "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "$BASE/v1/openapi.json" \
  --url "$BASE" \
  --header "X-Api-Key: $SAK" \
  --checks not_a_server_error,status_code_conformance,response_schema_conformance \
  --max-examples "$MAX_EXAMPLES" \
  --workers 1 \
  --seed 19 \
  --generation-database none \
  --generation-with-security-parameters false \
  --exclude-path-regex '/events$' \
  --report ndjson --report-dir "$WORK/report" \
  --no-color || status=$?
if [ -d "$WORK/report" ]; then
  python3 - "$WORK/report" <<'PY'
import json, pathlib, sys
requests = 0
for f in pathlib.Path(sys.argv[1]).glob("*.ndjson"):
    for line in f.read_text().splitlines():
        if '"ScenarioFinished"' in line:
            ev = json.loads(line).get("ScenarioFinished", {})
            for case in (ev.get("recorder") or {}).get("interactions", {}).values():
                requests += 1
print(f"schemathesis: {requests} requests sent")
PY
fi
if grep -q "panicked" "$WORK/stderr"; then
  echo "the server panicked:"; grep -n -A5 "panicked" "$WORK/stderr"; status=1
fi
if [ "$status" -ne 0 ]; then
  echo "schemathesis found problems (exit $status); server log:"; tail -n 50 "$WORK/stderr"
  exit "$status"
fi
echo "== openapi: ok"
