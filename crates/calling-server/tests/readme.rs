//! The README's embedding example is the crate documentation's, which runs
//! as a doctest: a README that drifts from it fails here.

use std::path::Path;

/// The lines of the first fenced Rust block after `start`, trimmed, empty
/// lines dropped; rustdoc's hidden-line marker `# ` is removed.
fn rust_block(text: &str, start: &str) -> Vec<String> {
    let from = text.find(start).expect("the section") + start.len();
    let body = text[from..]
        .split_once("```rust\n")
        .expect("a ```rust block")
        .1;
    let body = body.split_once("```").expect("a closed block").0;
    body.lines()
        .map(|line| line.trim())
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The `use` lines (sorted) and the other lines (in order).
fn split_uses(lines: Vec<String>) -> (Vec<String>, Vec<String>) {
    let (mut uses, code): (Vec<String>, Vec<String>) =
        lines.into_iter().partition(|line| line.starts_with("use "));
    uses.sort();
    (uses, code)
}

#[test]
fn readme_embedding_example_is_the_crate_docs_doctest() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    let docs: String = lib
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .map(|line| format!("{line}\n"))
        .collect();
    // The crate docs' block is fenced with a bare ```; the README's says rust.
    let docs = docs.replacen("# Embedding\n\n```\n", "# Embedding\n\n```rust\n", 1);
    // The README has its `use` lines above `main`, the doctest inside it.
    let (readme_uses, readme_code) = split_uses(rust_block(&readme, "## Embed it"));
    let (docs_uses, docs_code) = split_uses(rust_block(&docs, "# Embedding"));
    assert!(docs_code.len() > 5, "{docs_code:?}");
    assert_eq!(
        (readme_uses, readme_code),
        (docs_uses, docs_code),
        "README.md's example differs from the crate docs' doctest (src/lib.rs)"
    );
}
