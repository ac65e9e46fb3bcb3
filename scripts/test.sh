#!/usr/bin/env bash
# Run the whole test suite as the current user; as root, run it again as an
# unprivileged user, because most users are not root and a layer that
# silently needs root is a bug.
#
#   scripts/test.sh              # everything (slow stress tests included)
#   scripts/test.sh -m 'not slow'
#
# Suites that need a real browser or a real Redis (markers `browser`, `redis`)
# run once, in the root pass: the unprivileged pass deselects them through
# SANDBOX_ROOT_ONLY_MARKERS (tests/conftest.py; an environment variable rather
# than -m, so that a -m the caller passes still applies). They test the page
# and the distribution, not the isolation layers, and one headless Chromium and
# one Redis per CI run are enough. Likewise mypy (marker `typecheck`,
# tests/test_typecheck.py, configured by [tool.mypy] in pyproject.toml): the
# types do not depend on the user; its line "== mypy ..." in the root pass says
# what it checked.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

echo "== pytest as $(id -un) (uid $(id -u))"
.venv/bin/python -m pytest -q "$@"

if [ "$(id -u)" -eq 0 ]; then
    USER_NAME=${SANDBOX_TEST_USER:-sbxtest}
    id "$USER_NAME" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$USER_NAME"
    # The checkout may sit in a directory the user cannot enter (a root-only
    # home): give it a world-readable copy with its own venv.
    COPY=$(mktemp -d /var/tmp/sandbox-test.XXXXXX)
    tar -C "$ROOT" --exclude=.venv --exclude=.git --exclude='__pycache__' -cf - . | tar -C "$COPY" -xf -
    /usr/bin/python3 -m venv "$COPY/.venv"
    "$COPY/.venv/bin/python" -m pip install -q -e "$COPY[test]" 2>&1 | grep -v '^WARNING' || true
    chmod -R a+rX "$COPY"
    echo "== pytest as $USER_NAME (uid $(id -u "$USER_NAME"))"
    status=0
    (cd "$COPY" && setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --init-groups \
        env -i HOME="$(getent passwd "$USER_NAME" | cut -d: -f6)" PATH=/usr/local/bin:/usr/bin:/bin \
        LANG=C.UTF-8 SANDBOX_ROOT_ONLY_MARKERS="browser redis typecheck" "$COPY/.venv/bin/python" -m pytest -q -p no:cacheprovider "$@") || status=$?
    rm -rf "$COPY"
    exit $status
fi
