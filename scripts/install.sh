#!/usr/bin/env bash
# Install everything sandbox needs on Debian 12, into ./.venv.
#
# System packages: Debian's Python 3.11 with venv and headers, gcc with libc6-dev
# and musl-tools (the sandbox's init is linked statically, against musl when
# present), libcap-dev
# (python-prctl compiles against libcap), libseccomp2 (pyseccomp loads it with
# ctypes), iproute2, and the peers used as cross-checks by `sandbox bench`
# (bubblewrap, firejail; optional, installed when available), and Chromium
# with chromedriver for the web page's browser tests.
# The venv is built from /usr/bin/python3 on purpose: an interpreter under a
# root-only directory (pyenv in /root) cannot run as the unprivileged users the
# isolation tests also run as.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends \
        python3 python3-venv python3-dev gcc libc6-dev libcap-dev libseccomp2 iproute2 procps >/dev/null
    # musl's static libc for the init (sandbox/_native/toolchain.py): two init processes
    # live per sandbox, ~30 KiB lighter each than with glibc's; without it, gcc builds it
    $SUDO apt-get install -y -qq --no-install-recommends musl-tools >/dev/null \
        || echo "install.sh: musl-tools not installed; the init is built with glibc" >&2
    # The compatibility suite (tests/compat) runs these everyday tools directly
    # and sandboxed; libc6-dev also gives the static libc the init links against.
    $SUDO apt-get install -y -qq --no-install-recommends \
        libc6-dev make git sqlite3 nodejs openjdk-17-jdk-headless bsdutils util-linux \
        ncurses-bin dpkg wget jq openssh-client >/dev/null
    # The web page's browser tests (tests/browser): Debian's headless-capable
    # Chromium and the matching chromedriver (/usr/bin/chromium, /usr/bin/chromedriver).
    $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    # The allowlist proxy tests (tests/test_netallow_traffic.py) drive curl through it.
    $SUDO apt-get install -y -qq --no-install-recommends curl ca-certificates >/dev/null
    # The scale-out tests (tests/scaleout) start their own redis-server on a free
    # loopback port; the distribution's service is not used (no systemd here).
    $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends bubblewrap firejail >/dev/null \
        || echo "install.sh: bubblewrap/firejail not installed; sandbox bench will skip them" >&2
fi

PY=${SANDBOX_PYTHON:-/usr/bin/python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
echo "install.sh: installed; try: .venv/bin/sandbox doctor"
