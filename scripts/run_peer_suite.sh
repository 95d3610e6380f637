#!/usr/bin/env bash
# Run seed 000's own test suite (travisvn/chatterbox-tts-api, tests/) against a fresh server.
#
#   scripts/run_peer_suite.sh PEER_CHECKOUT [extra pytest arguments]
#
# The peer's tests are AGPL-licensed, so they stay outside this repository: pass a checkout
# (git clone https://github.com/travisvn/chatterbox-tts-api). The server runs as `make run` does
# (gunicorn.conf.py, CHATTERBOX_ENGINE=auto unless set) with a fresh DATA_DIR, on port 4123
# because test_status.py and test_sse_streaming.py hard-code localhost:4123. The failures that
# remain on purpose are listed in docs/api.md ("Seed 000's test suite").
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,11p "$0"; exit 2; }
peer=$(realpath "$1"); shift
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
port=${PEER_PORT:-4123}
data=$(mktemp -d)
export CHATTERBOX_BIND="127.0.0.1:$port" CHATTERBOX_DATA_DIR="$data/data" HF_HUB_OFFLINE=1
(cd "$root" && exec "$python" -m gunicorn -c gunicorn.conf.py) >"$data/server.log" 2>&1 &
server=$!
cleanup() { kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 240); do
    if "$python" -c "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=2)" 2>/dev/null; then
        break
    fi
    kill -0 "$server" 2>/dev/null || { cat "$data/server.log"; exit 1; }
    sleep 0.5
done
cd "$peer"
status=0
# -o addopts=: the peer's pyproject asks for pytest-cov options that this venv need not have
CHATTERBOX_TEST_URL="http://127.0.0.1:$port" "$python" -m pytest -p no:cacheprovider -o addopts= -q -rfE \
    tests/test_api.py tests/test_status.py tests/test_memory.py tests/test_voice_library.py \
    tests/test_voice_upload.py tests/test_sse_streaming.py "$@" || status=$?
echo "server log: last lines"; tail -5 "$data/server.log"
exit $status
