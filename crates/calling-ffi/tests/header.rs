//! The checked-in `include/calling.h` is exactly what the pinned cbindgen
//! generates from this crate: a stale header fails here. Set
//! `CALLING_FFI_BLESS=1` to rewrite it. (The workspace's `include/` is a
//! link to this crate's, so the header the package ships and the one the
//! documented compile lines use are one file.)

use std::path::PathBuf;

#[test]
fn checked_in_header_is_up_to_date() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .unwrap();
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let header = crate_dir.join("include/calling.h");
    if std::env::var_os("CALLING_FFI_BLESS").is_some() {
        std::fs::write(&header, &generated).unwrap();
        return;
    }
    let current = std::fs::read(&header).unwrap_or_default();
    assert!(
        current == generated,
        "include/calling.h is stale: regenerate it with \
         `CALLING_FFI_BLESS=1 cargo test -p calling-ffi --test header`"
    );
}
