#!/usr/bin/env bash
# Installs what the browser tests need on a fresh Debian machine: Debian's
# chromium package (headless, with fake camera and microphone) and
# playwright-core from npm to drive it. Idempotent; quick when everything is
# already there. .ci/run calls it (as root) before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -q
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "$@"
}

if [ ! -x /usr/bin/chromium ]; then
    echo "setup: installing chromium"
    apt_install chromium
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "setup: installing nodejs and npm"
    apt_install nodejs npm
fi

# playwright-core only drives the installed Chromium: it downloads no browser.
lock=tests/browser/package-lock.json
stamp=tests/browser/node_modules/.setup-stamp
if [ ! -f "$stamp" ] || ! cmp -s "$lock" "$stamp"; then
    echo "setup: npm ci in tests/browser"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
    cp "$lock" "$stamp"
fi

echo "setup: $(/usr/bin/chromium --version 2>/dev/null | tail -1), node $(node --version)"
