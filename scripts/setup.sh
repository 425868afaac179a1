#!/usr/bin/env bash
# Installs what the browser tests need on a fresh Debian machine: Debian's
# chromium package (headless, with fake camera and microphone) and
# playwright-core from npm to drive it; and what the aiortc interop tests
# need: a Python venv at tests/aiortc/.venv with tests/aiortc/requirements.txt;
# coturn's turnserver for the TURN tests; iproute2, nftables and conntrack
# for the NAT lab; PulseAudio and ALSA's headers and pulse plugin for the
# audio device tests.
# Idempotent; quick when everything is already there. .ci/run calls it (as
# root) before the tests.
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
# coturn: the TURN relay crates/calling/tests/turn.rs starts on loopback.
if ! command -v turnserver >/dev/null 2>&1; then
    echo "setup: installing coturn"
    apt_install coturn
fi
# redis-server: the Redis the cluster tests (crates/calling-server/tests/
# cluster.rs) start on free loopback ports.
if ! command -v redis-server >/dev/null 2>&1; then
    echo "setup: installing redis-server"
    apt_install redis-server
fi
# The NAT lab (tests/netlab): network namespaces and veth links
# (iproute2), NAT (nftables) and a look at the NAT's mappings (conntrack).
for tool in ip:iproute2 nft:nftables conntrack:conntrack; do
    if ! PATH="$PATH:/usr/sbin:/sbin" command -v "${tool%%:*}" >/dev/null 2>&1; then
        echo "setup: installing ${tool#*:}"
        apt_install "${tool#*:}"
    fi
done
# The audio device tests (crates/calling-media/tests/devices.rs,
# docs/DEVICES.md): cpal builds against ALSA (libasound2-dev, pkg-config);
# a PulseAudio daemon with only null sinks (scripts/pulse.sh) stands in for
# sound cards, reached through ALSA's pulse plugin (libasound2-plugins);
# pacat and parec (pulseaudio-utils) play into it and record from it.
audio_missing=""
for pkg in pulseaudio pulseaudio-utils libasound2-dev libasound2-plugins pkg-config; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
        audio_missing="$audio_missing $pkg"
    fi
done
if [ -n "$audio_missing" ]; then
    echo "setup: installing$audio_missing"
    # shellcheck disable=SC2086
    apt_install $audio_missing
fi
# libclang: the `camera` example's V4L2 bindings are generated at build time.
# (libclang-cpp, which other packages bring, is not what bindgen loads.)
if ! dpkg-query -W -f='${Status}' libclang-dev 2>/dev/null | grep -q "ok installed"; then
    echo "setup: installing libclang-dev"
    apt_install libclang-dev
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "setup: installing nodejs and npm"
    apt_install nodejs npm
fi
# tsc: the web package's unit tests type-check its index.d.ts.
if ! command -v tsc >/dev/null 2>&1; then
    echo "setup: installing node-typescript"
    apt_install node-typescript
fi

# playwright-core only drives the installed Chromium: it downloads no browser.
lock=tests/browser/package-lock.json
stamp=tests/browser/node_modules/.setup-stamp
if [ ! -f "$stamp" ] || ! cmp -s "$lock" "$stamp"; then
    echo "setup: npm ci in tests/browser"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
    cp "$lock" "$stamp"
fi

# The aiortc interop client runs in its own venv with pinned packages
# (wheels from PyPI: nothing is compiled).
venv=tests/aiortc/.venv
req=tests/aiortc/requirements.txt
pystamp=$venv/.setup-stamp
if [ ! -x "$venv/bin/pip" ]; then
    if ! command -v python3 >/dev/null 2>&1; then
        echo "setup: installing python3"
        apt_install python3
    fi
    echo "setup: creating $venv"
    rm -rf "$venv"
    # Debian ships the venv module's ensurepip apart from python3.
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        echo "setup: installing python3-venv"
        apt_install python3-venv
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
fi
if [ ! -f "$pystamp" ] || ! cmp -s "$req" "$pystamp"; then
    echo "setup: pip install -r $req"
    "$venv/bin/pip" install --disable-pip-version-check --no-input -q -r "$req"
    cp "$req" "$pystamp"
fi

echo "setup: $(/usr/bin/chromium --version 2>/dev/null | tail -1), node $(node --version), $("$venv/bin/python" --version)"
