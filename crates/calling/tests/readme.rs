//! The README's Rust program is the quickstart example's, word for word:
//! the example is built and run by the test command, so the README's code
//! cannot rot unnoticed.

#![allow(clippy::unwrap_used)]

/// A file of the workspace, read at run time (the README is not part of
/// this crate's package).
fn workspace_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path))
        .unwrap_or_else(|e| panic!("{path}: {e} (this test runs in the workspace only)"))
}

/// The lines between the `README-BEGIN` and `README-END` marks of the
/// example, less the function body's indent.
fn example_region() -> Vec<String> {
    let example = workspace_file("crates/calling/examples/quickstart.rs");
    let region = example
        .split("// README-BEGIN\n")
        .nth(1)
        .expect("the example has a README-BEGIN mark")
        .split("// README-END")
        .next()
        .expect("the example has a README-END mark");
    region
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l).trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The first Rust block of the README's "Using it" section.
fn readme_block() -> Vec<String> {
    let readme = workspace_file("README.md");
    let section = readme
        .split("## Using it\n")
        .nth(1)
        .expect("the README has a 'Using it' section");
    let block = section
        .split("```rust\n")
        .nth(1)
        .expect("'Using it' has a Rust block")
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_readme_shows_the_quickstart_as_it_is() {
    let (example, readme) = (example_region(), readme_block());
    assert!(
        example.len() > 20,
        "the marked region is too short: {example:?}"
    );
    for (n, (e, r)) in example.iter().zip(&readme).enumerate() {
        assert_eq!(
            e,
            r,
            "line {} of the README's program differs from the example",
            n + 1
        );
    }
    assert_eq!(
        example.len(),
        readme.len(),
        "the README's program and the example differ in length"
    );
}
