#!/usr/bin/env bash
# Our signaling server and the PeerJS server (npm `peer`, pinned in
# bench/peerjs/package.json) side by side: same load client, same workload,
# one table. See crates/calling-server/examples/peerjs_bench.rs for what is
# measured. Arguments go to the example, e.g.
#   scripts/bench-peerjs.sh --idle 10000 --active 200 --rate 5000 --secs 10
# Needs Node.js and npm (the PeerJS server runs on node).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "bench-peerjs.sh: ERROR: $tool is missing; the PeerJS server needs Node.js (>= 14) and npm (Debian: apt-get install nodejs npm)" >&2
        exit 2
    fi
done

# Install the pinned PeerJS server unless node_modules already matches the lock file.
lock=bench/peerjs/package-lock.json
installed=bench/peerjs/node_modules/.package-lock.json
if [ ! -f "$installed" ] || [ ! -f bench/peerjs/node_modules/peer/package.json ] || [ "$lock" -nt "$installed" ]; then
    echo "== npm ci --prefix bench/peerjs"
    npm ci --prefix bench/peerjs --no-audit --no-fund
fi

cargo build --release -p calling-server --bin calling-server --example peerjs_bench
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/examples/peerjs_bench" "$@"
