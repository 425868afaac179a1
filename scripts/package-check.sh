#!/usr/bin/env bash
# Checks that the workspace's crates still package for crates.io (nothing is
# uploaded). A full `cargo package --workspace` also builds every packaged
# crate from its archive, with the default dev profile and none of the
# build output the tests use: about 15 minutes here, which CI cannot afford.
# So this runs `cargo package --workspace --no-verify`, which checks the
# manifests (every path dependency has a version, the readme exists,
# nothing refers outside the package) and writes the archives, then looks
# inside each archive:
# - every `include_str!` / `include_bytes!` of a literal path, in any
#   packaged .rs file, names a file that is in the archive (a file outside
#   the crate directory never is);
# - each published crate ships its README.md and both license texts, and
#   calling-ffi its header
#   include/calling.h;
# - cargo printed no warning (a missing repository, homepage or
#   documentation is only a warning to cargo).
# Not checked: that the archives compile (a missing module file, a feature
# a crate only gets through another workspace member); run
# `cargo package --workspace` for that before a release. Tests that read
# workspace files at run time (docs/, examples/c/, tests/browser/) are not
# expected to pass from an archive.
set -euo pipefail
cd "$(dirname "$0")/.."

# Files a published crate must ship besides what its code includes.
required_files() {
    echo README.md
    echo LICENSE-MIT
    echo LICENSE-APACHE
    case "$1" in
        calling-ffi) echo include/calling.h ;;
    esac
}

target_dir="$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)"
log="$(mktemp)"
scratch="$(mktemp -d)"
trap 'rm -rf "$log" "$scratch"' EXIT

# --allow-dirty: the check is about which files ship, and must work on a
# working tree with changes too.
if ! cargo package --workspace --no-verify --allow-dirty >"$log" 2>&1; then
    cat "$log" >&2
    echo "!!! cargo package --workspace --no-verify failed" >&2
    exit 1
fi
if grep -q '^warning' "$log"; then
    cat "$log" >&2
    echo "!!! cargo package printed warnings" >&2
    exit 1
fi

failed=""
checked=0
# "   Packaging calling-core v0.1.0 (/path/to/crates/calling-core)"
while read -r name version manifest_dir; do
    crate="$target_dir/package/$name-$version.crate"
    tar -xzf "$crate" -C "$scratch"
    root="$(realpath "$scratch/$name-$version")"
    checked=$((checked + 1))

    while IFS=: read -r file include; do
        rel="$(sed -E 's/^include_(str|bytes)!\("([^"]*)"\)$/\2/' <<<"$include")"
        path="$(realpath -m "$(dirname "$file")/$rel")"
        if [[ "$path" != "$root/"* || ! -f "$path" ]]; then
            echo "!!! $name: ${file#"$root"/} includes \"$rel\", which is not in the package" >&2
            failed="yes"
        fi
    done < <(grep -roE --include='*.rs' 'include_(str|bytes)!\("[^"]*"\)' "$root" || true)

    if ! grep -qE '^publish = false' "$manifest_dir/Cargo.toml"; then
        for needed in $(required_files "$name"); do
            if [ ! -f "$root/$needed" ]; then
                echo "!!! $name: $needed is not in the package" >&2
                failed="yes"
            fi
        done
    fi
done < <(sed -nE 's/^ *Packaging ([^ ]+) v([^ ]+) \((.*)\)$/\1 \2 \3/p' "$log")

if [ "$checked" -eq 0 ]; then
    cat "$log" >&2
    echo "!!! no package found in the output of cargo package" >&2
    exit 1
fi
if [ -n "$failed" ]; then
    exit 1
fi
echo "package check: $checked packages, their included files and READMEs are in their archives"
