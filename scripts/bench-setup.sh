#!/usr/bin/env bash
# Call setup, measured in one run against every kind of peer we test with:
# Rust <-> Rust (the whole SDK stack, and the media engine alone), Rust <->
# headless Chromium, Rust <-> aiortc. Needs what scripts/setup.sh installs.
# BENCH_CALLS (default 20) calls per direction for the browser and aiortc.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_CALLS="${BENCH_CALLS:-20}"
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== Rust <-> Rust, SDK: accept -> first frame (after 300 ms of ringing, then at once)"
cargo run -q --release --example call_setup -- --calls 50
cargo run -q --release --example call_setup -- --calls 50 --ring-ms 0
echo "== Rust <-> Rust, media engine: connect -> first frame"
cargo bench -q -p calling-media --bench media -- setup
echo "== Rust <-> Chromium"
cargo test -q --release -p calling --test browser -- --ignored --nocapture browser_setup_bench
echo "== Rust <-> aiortc"
cargo test -q --release -p calling --test aiortc -- --ignored --nocapture aiortc_setup_bench
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
