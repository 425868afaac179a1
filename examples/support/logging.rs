//! Log set-up shared by the softphone and the examples (included with
//! `#[path]`; the quickstart, in the calling crate, has the same few lines).

use tracing_subscriber::EnvFilter;

/// Sends logs to stderr (stdout is the program's own output), filtered by
/// `RUST_LOG` or else [`calling::DEFAULT_LOG_FILTER`], with colour codes
/// only on a terminal and never with `NO_COLOR` set.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(calling::DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(calling::log_colour(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
}
