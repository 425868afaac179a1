//! The checked-in headers are exactly what the pinned cbindgen generates
//! from this crate: a stale header fails here. There are two identical
//! copies: `crates/calling-ffi/include/calling.h`, which the crate's package
//! ships, and the workspace's `include/calling.h`, which the documented
//! compile lines use. Set `CALLING_FFI_BLESS=1` to rewrite both.

use std::path::{Path, PathBuf};

/// The headers to check: the crate's own, and the workspace's copy when
/// the crate sits in the workspace (not in an unpacked `.crate`).
fn headers(crate_dir: &Path) -> Vec<PathBuf> {
    let mut headers = vec![crate_dir.join("include/calling.h")];
    let root = crate_dir.join("../..");
    let in_workspace = root
        .join("crates/calling-ffi")
        .canonicalize()
        .is_ok_and(|dir| crate_dir.canonicalize().is_ok_and(|own| own == dir));
    if in_workspace {
        headers.push(root.join("include/calling.h"));
    }
    headers
}

#[test]
fn checked_in_headers_are_up_to_date() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .unwrap();
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let bless = std::env::var_os("CALLING_FFI_BLESS").is_some();
    for header in headers(&crate_dir) {
        if bless {
            std::fs::write(&header, &generated).unwrap();
            continue;
        }
        let current = std::fs::read(&header).unwrap_or_default();
        assert!(
            current == generated,
            "{} is stale: regenerate it with \
             `CALLING_FFI_BLESS=1 cargo test -p calling-ffi --test header`",
            header.display()
        );
    }
}
