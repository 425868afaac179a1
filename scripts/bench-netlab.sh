#!/usr/bin/env bash
# Call setup across the NAT lab (tests/netlab, docs/NETLAB.md) per path
# type: host (same LAN, no STUN), srflx (two port-restricted cone NATs, STUN)
# and relay (two symmetric NATs, TURN through coturn). Setup is accept ->
# first remote frame at the caller, NETLAB_BENCH_CALLS (default 20) calls
# per path, p50 / p95; then the restore time after an address change. Needs
# root and what scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
export NETLAB_BENCH_CALLS="${NETLAB_BENCH_CALLS:-20}"
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo test -q --release -p calling-netlab --test lab -- --ignored --nocapture --test-threads 1 setup_time_per_path_type
# Restore: router A re-maps UDP to a new public address mid-call (media
# path gone, signaling kept); the gap until media flows again through an
# ICE restart, NETLAB_BENCH_RESTORES (default 5) calls.
cargo test -q --release -p calling-netlab --test lab -- --ignored --nocapture --test-threads 1 restore_time_after_the_media_mapping_moves
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
