#!/bin/sh
# The kazoo_vm walk-through: every voicemail request, in order, against a running service.
#
#   ./dev serve                     # terminal 1: the API on http://127.0.0.1:8000
#   sh examples/walkthrough.sh      # terminal 2
#
# It needs only POSIX sh, curl and python3. Every id it uses comes from a reply; the
# audio is a half-second WAV it makes itself. Each request is printed ("METHOD path"),
# then its status and the part of the reply that matters. The first unexpected status
# stops the script with the reply on stderr and exit status 1.
#
# Environment (all optional):
#   KAZOO_VM_URL        the service (default http://127.0.0.1:8000)
#   ACCOUNT_ID, API_KEY an existing account to work in; without them the script makes a
#                       new account and a user with the operator command below, which
#                       must reach the service's store (it does beside ./dev serve)
#   KAZOO_VM_CLI        the operator command (default: ./dev kazoo_vm, run from the
#                       repository root)
#   LOGIN_USER, LOGIN_PASSWORD, LOGIN_ACCOUNT   a user of that account and the account's
#                       name, to show PUT /v2/user_auth (set by the script when it makes
#                       the account; for the demo account of ./dev serve: demo, demo, demo)
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=${KAZOO_VM_URL:-http://127.0.0.1:8000}
API=$BASE/v2
CLI=${KAZOO_VM_CLI:-./dev kazoo_vm}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
AUTH="Accept: application/json"   # becomes the X-Auth-Token header once logged in

# call EXPECTED METHOD PATH [curl options]: send the request, keep the reply body in
# $WORK/body, and stop unless the status is EXPECTED.
call() {
    expected=$1 method=$2 path=$3
    shift 3
    printf '%s %s\n' "$method" "$path"
    status=$(curl -sS -o "$WORK/body" -w '%{http_code}' -X "$method" -H "$AUTH" "$@" "$API$path") || {
        echo "curl failed: is kazoo_vm running at $BASE?" >&2
        exit 1
    }
    if [ "$status" != "$expected" ]; then
        echo "  -> $status, expected $expected:" >&2
        head -c 2000 "$WORK/body" >&2
        echo >&2
        exit 1
    fi
}

# field KEY...: a value of the last JSON reply (a list takes an index), e.g. field data id
field() {
    python3 -c 'import json, sys
value = json.load(open(sys.argv[1]))
for key in sys.argv[2:]:
    value = value[int(key)] if isinstance(value, list) else value[key]
print(value if isinstance(value, str) else json.dumps(value))' "$WORK/body" "$@"
}

# count KEY...: how many items a list (or object) of the last reply holds
count() {
    python3 -c 'import json, sys
value = json.load(open(sys.argv[1]))
for key in sys.argv[2:]:
    value = value[int(key)] if isinstance(value, list) else value[key]
print(len(value))' "$WORK/body" "$@"
}

# say TEXT: the short form of the reply, under its request
say() {
    printf '  -> %s %s\n' "$status" "$*"
}

# check WHAT ACTUAL WANTED: stop when a value of a reply is not what the walk-through expects
check() {
    if [ "$2" != "$3" ]; then
        echo "unexpected $1: $2 (expected $3)" >&2
        exit 1
    fi
}

curl -s -o /dev/null "$API/schemas" || {
    echo "no kazoo_vm at $BASE: start it with ./dev serve (or set KAZOO_VM_URL)" >&2
    exit 1
}

echo "== an account to work in"
if [ -z "${ACCOUNT_ID:-}" ] || [ -z "${API_KEY:-}" ]; then
    LOGIN_ACCOUNT="Walkthrough $(date +%Y%m%d%H%M%S) $$"
    LOGIN_USER=walker LOGIN_PASSWORD=walk-through-secret
    echo "$CLI accounts create --name '$LOGIN_ACCOUNT'"
    (cd "$ROOT" && $CLI accounts create --name "$LOGIN_ACCOUNT") >"$WORK/account.json" 2>"$WORK/cli.log" || {
        cat "$WORK/cli.log" >&2
        exit 1
    }
    cp "$WORK/account.json" "$WORK/body"
    ACCOUNT_ID=$(field account_id)
    API_KEY=$(field api_key)
    echo "  -> account $ACCOUNT_ID"
    echo "$CLI users create --account $ACCOUNT_ID --username $LOGIN_USER --password ..."
    (cd "$ROOT" && $CLI users create --account "$ACCOUNT_ID" --username "$LOGIN_USER" --password "$LOGIN_PASSWORD") \
        >"$WORK/body" 2>"$WORK/cli.log" || {
        cat "$WORK/cli.log" >&2
        exit 1
    }
    echo "  -> user $(field user_id)"
fi
A=/accounts/$ACCOUNT_ID

echo "== log in"
call 201 PUT /api_auth -d "{\"data\":{\"api_key\":\"$API_KEY\"}}"
TOKEN=$(field auth_token)
AUTH="X-Auth-Token: $TOKEN"
say "auth_token ($(printf %s "$TOKEN" | wc -c | tr -d ' ') characters) for account $(field data account_id)"

if [ -n "${LOGIN_USER:-}" ] && [ -n "${LOGIN_PASSWORD:-}" ] && [ -n "${LOGIN_ACCOUNT:-}" ]; then
    # credentials: the MD5 hex of "lower(username):password", as Kazoo stores them
    CREDENTIALS=$(python3 -c 'import hashlib, sys; print(hashlib.md5(f"{sys.argv[1].lower()}:{sys.argv[2]}".encode()).hexdigest())' \
        "$LOGIN_USER" "$LOGIN_PASSWORD")
    BODY=$(python3 -c 'import json, sys; print(json.dumps({"data": {"credentials": sys.argv[1], "account_name": sys.argv[2]}}))' \
        "$CREDENTIALS" "$LOGIN_ACCOUNT")
    call 201 PUT /user_auth -d "$BODY"
    say "auth_token for user $(field data owner_id)"
fi

echo "== voicemail boxes"
call 201 PUT "$A/vmboxes" -H "Content-Type: application/json" \
    -d '{"data":{"name":"Reception","mailbox":"3001","pin":"1234","require_pin":true}}'
B1=$(field data id)
say "box $B1 (mailbox $(field data mailbox))"
call 201 PUT "$A/vmboxes" -H "Content-Type: application/json" -d '{"data":{"name":"Sales","mailbox":"3002"}}'
B2=$(field data id)
say "box $B2 (mailbox $(field data mailbox))"
call 200 GET "$A/vmboxes"
check "box count" "$(count data)" 2
say "$(count data) boxes"
call 200 GET "$A/vmboxes/$B1"
say "name $(field data name), require_pin $(field data require_pin)"
call 200 PATCH "$A/vmboxes/$B1" -H "Content-Type: application/json" -d '{"data":{"name":"Front desk"}}'
check "patched name" "$(field data name)" "Front desk"
say "name $(field data name), mailbox still $(field data mailbox)"
call 200 POST "$A/vmboxes/$B1" -H "Content-Type: application/json" \
    -d '{"data":{"name":"Front desk","mailbox":"3001","pin":"4321","require_pin":true}}'
say "replaced: name $(field data name)"

echo "== messages: created three ways, then audio"
python3 -c 'import math, struct, sys, wave
with wave.open(sys.argv[1], "wb") as out:
    out.setnchannels(1); out.setsampwidth(2); out.setframerate(8000)
    out.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i * 2 * math.pi * 440 / 8000))) for i in range(4000)))' \
    "$WORK/hello.wav"
echo "(made $WORK/hello.wav, $(wc -c <"$WORK/hello.wav" | tr -d ' ') bytes)"

call 201 PUT "$A/vmboxes/$B1/messages" -H "Content-Type: application/json" \
    -d '{"data":{"caller_id_name":"Alice","caller_id_number":"6001","from":"alice@example.com"}}'
M1=$(field data media_id)
say "message $M1 (JSON, no audio yet), folder $(field data folder)"
call 201 PUT "$A/vmboxes/$B1/messages" -H "Content-Type: multipart/mixed" \
    -F 'metadata={"data":{"caller_id_name":"Bob","caller_id_number":"6002"}};type=application/json' \
    -F "file=@$WORK/hello.wav;type=audio/x-wav"
M2=$(field data media_id)
say "message $M2 (multipart: metadata and audio)"
call 201 PUT "$A/vmboxes/$B1/messages" -H "Content-Type: audio/x-wav" --data-binary "@$WORK/hello.wav"
M3=$(field data media_id)
say "message $M3 (the audio alone)"
call 201 PUT "$A/vmboxes/$B1/messages/$M1/raw" -H "Content-Type: audio/x-wav" --data-binary "@$WORK/hello.wav"
say "audio of $(field data media_id) uploaded"

echo "== listings, two messages a page"
call 200 GET "$A/vmboxes/$B1/messages?page_size=2"
check "first page size" "$(count data)" 2
NEXT=$(field next_start_key)
say "$(count data) messages, next_start_key $NEXT"
call 200 GET "$A/vmboxes/$B1/messages?page_size=2&start_key=$NEXT"
check "second page size" "$(count data)" 1
say "$(count data) message, the last one"
call 200 GET "$A/vmboxes/messages"
check "account-wide count" "$(count data)" 3
say "$(count data) messages in the account"
call 200 GET "$A/vmboxes/$B1/messages/$M1"
say "from $(field data caller_id_name), folder $(field data folder)"

echo "== folders"
call 200 POST "$A/vmboxes/$B1/messages/$M1" -H "Content-Type: application/json" -d '{"data":{"folder":"saved"}}'
check "folder" "$(field data folder)" saved
say "$M1 is $(field data folder)"
call 200 POST "$A/vmboxes/$B1/messages" -H "Content-Type: application/json" \
    -d "{\"data\":{\"messages\":[\"$M2\",\"$M3\"],\"folder\":\"saved\"}}"
check "bulk folder change" "$(count data succeeded)" 2
say "saved: $(field data succeeded)"

echo "== audio"
call 206 GET "$A/vmboxes/$B1/messages/$M2/raw" -H "Range: bytes=0-99"
check "range length" "$(wc -c <"$WORK/body" | tr -d ' ')" 100
say "$(wc -c <"$WORK/body" | tr -d ' ') bytes, starting $(head -c 4 "$WORK/body")"
call 200 GET "$A/vmboxes/$B1/messages/$M2/raw"
cmp -s "$WORK/body" "$WORK/hello.wav" || { echo "the downloaded audio is not the uploaded one" >&2; exit 1; }
say "the whole recording, byte for byte the one uploaded"
call 200 POST "$A/vmboxes/$B1/messages/raw" -H "Content-Type: application/json" -H "Accept: application/zip" \
    -d "{\"data\":{\"messages\":[\"$M2\",\"$M3\"]}}"
check "ZIP signature" "$(head -c 2 "$WORK/body")" PK
say "ZIP holding $(python3 -c 'import sys, zipfile; print(len(zipfile.ZipFile(sys.argv[1]).namelist()))' "$WORK/body") recordings"

echo "== move and copy"
call 200 POST "$A/vmboxes/$B1/messages/$M1" -H "Content-Type: application/json" -d "{\"data\":{\"source_id\":\"$B2\"}}"
MOVED=$(field data media_id)   # a moved message gets a new id
say "$M1 is now $MOVED in box $B2"
call 200 POST "$A/vmboxes/$B1/messages/$M2" -H "Content-Type: application/json" -d "{\"data\":{\"source_id\":[\"$B2\"]}}"
COPY=$(field data succeeded 0)
say "copy $COPY of $M2 in box $B2"
call 200 GET "$A/vmboxes/$B2/messages"
check "messages in box 2" "$(count data)" 2
say "box $B2 holds $(count data) messages"

echo "== delete"
call 200 DELETE "$A/vmboxes/$B1/messages" -H "Content-Type: application/json" \
    -d "{\"data\":{\"messages\":[\"$M2\",\"$M3\"]}}"
check "bulk delete" "$(count data succeeded)" 2
say "deleted: $(field data succeeded)"
call 200 DELETE "$A/vmboxes/$B2/messages/$MOVED"
say "$(field data media_id) is $(field data folder)"
call 200 DELETE "$A/vmboxes/$B2"
say "box $(field data id) deleted"
call 200 DELETE "$A/vmboxes/$B1"
say "box $(field data id) deleted"
call 404 GET "$A/vmboxes/$B1"
say "$(field message)"

echo "walk-through done"
