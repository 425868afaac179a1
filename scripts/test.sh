#!/usr/bin/env bash
# Runs every test of the workspace. This is the README's test command.
# The browser tests (crates/calling/tests/browser.rs) need Chromium and
# tests/browser/node_modules: scripts/setup.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

browser_missing=""
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ] || [ ! -d tests/browser/node_modules/playwright-core ]; then
    browser_missing="yes"
    echo "!!! Chromium or tests/browser/node_modules is missing: the browser tests will be SKIPPED (run scripts/setup.sh)" >&2
fi

cargo test --workspace --all-targets
cargo test --workspace --doc

if [ -n "$browser_missing" ]; then
    echo "!!! the browser tests were SKIPPED: Chromium or tests/browser/node_modules is missing (run scripts/setup.sh)" >&2
fi
