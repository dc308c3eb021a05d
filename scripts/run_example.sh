#!/usr/bin/env bash
# Serve example_app on http://127.0.0.1:${PORT:-8080}/ with gunicorn.
#
#   scripts/run_example.sh                                     # embedded store, 1 worker
#   GAESIGNALS_STORE=memcached://127.0.0.1:11211 scripts/run_example.sh   # 3 workers share it
#
# The memcached run needs a memcached server already running at that address (start one with
# `memcached -u nobody -p 11211`, -u being required as root; Debian and Ubuntu: `apt-get
# install memcached`); the script checks that it answers before it starts the app.
#
# Uses the python on PATH when it already has what the example needs (an activated venv, or
# the test suite's); otherwise creates .venv and installs gaesignals[example,memcached] there.
# GAESIGNALS_NO_INSTALL=1 forbids installing. PORT, WORKERS and THREADS override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${PORT:-8080}"
STORE="${GAESIGNALS_STORE:-memory://}"
modules="gaesignals, webapp2, webob, gunicorn"
case "$STORE" in
    memcached://*)
        modules="$modules, pymemcache"
        WORKERS="${WORKERS:-3}"  # memcached is shared: every worker sees every signal
        ;;
    memory://*)
        WORKERS="${WORKERS:-1}"  # the embedded store lives in one process: one worker only
        ;;
    *)
        echo "run_example.sh: GAESIGNALS_STORE must be memory:// or memcached://host:port" \
            "(appengine:// works only on App Engine)" >&2
        exit 2
        ;;
esac
THREADS="${THREADS:-4}"

has_everything() {
    "$1" -c "import sys; assert sys.version_info >= (3, 11); import $modules" >/dev/null 2>&1
}

PY=""
for candidate in python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && has_everything "$(command -v "$candidate")"; then
        PY="$(command -v "$candidate")"
        break
    fi
done
if [ -z "$PY" ]; then
    if [ ! -x .venv/bin/python ]; then
        base=""
        for candidate in python3.13 python3.12 python3.11 python3; do
            if command -v "$candidate" >/dev/null 2>&1 &&
                "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
                base="$candidate"
                break
            fi
        done
        if [ -z "$base" ]; then
            echo "run_example.sh: Python 3.11+ is required" >&2
            exit 1
        fi
        echo "== creating .venv with $base" >&2
        "$base" -m venv .venv
    fi
    PY=.venv/bin/python
    if ! has_everything "$PY"; then
        if [ -n "${GAESIGNALS_NO_INSTALL:-}" ]; then
            echo "run_example.sh: $PY lacks $modules and GAESIGNALS_NO_INSTALL is set" >&2
            exit 1
        fi
        # pip says what it fetches as it goes: the first run takes a minute or so.
        echo "== installing gaesignals[example,memcached] into .venv (pip, then webapp2," \
            "gunicorn and the rest; a minute or so the first time)" >&2
        "$PY" -m pip install --progress-bar off --upgrade pip >&2
        "$PY" -m pip install --progress-bar off -e '.[example,memcached]' >&2
    fi
fi

if [ "${STORE%%://*}" = memcached ]; then
    # Every server of the URL must answer: the app's first request would fail otherwise.
    if ! "$PY" - "$STORE" <<'PY'
import socket
import sys
from urllib.parse import urlsplit

for spec in urlsplit(sys.argv[1]).netloc.split(","):
    host, _, port = spec.strip().rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
    except (OSError, ValueError) as error:
        print(f"run_example.sh: no memcached answers at {spec!r} ({error}); start one first, "
              "e.g. `memcached -u nobody -p 11211` (Debian/Ubuntu: apt-get install memcached)",
              file=sys.stderr)
        sys.exit(1)
PY
    then
        exit 1
    fi
fi

export GAESIGNALS_STORE="$STORE"
if [ "${STORE%%://*}" = memcached ] && [ -z "${GAESIGNALS_SECRET_KEY:-}" ]; then
    # Shared caches need signed payloads; one key for this run, shared by its workers.
    GAESIGNALS_SECRET_KEY="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(48))')"
    export GAESIGNALS_SECRET_KEY
    echo "== signing payloads with a key made for this run (set GAESIGNALS_SECRET_KEY to keep one)" >&2
fi
echo "== gaesignals example on $STORE with $WORKERS worker(s) of $THREADS thread(s) ($PY)" >&2
exec "$PY" -m gunicorn --config example_app/gunicorn.conf.py \
    --bind "127.0.0.1:$PORT" --workers "$WORKERS" --threads "$THREADS" \
    example_app.main:app
