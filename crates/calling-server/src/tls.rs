//! TLS on the listen address: `https://` and `wss://` served by the server
//! itself with rustls, the certificate reloadable while it runs.
//!
//! The acceptor sits behind a lock that each new connection reads once, so
//! a reload affects only connections accepted after it; sessions already
//! running keep the TLS state they negotiated.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info};

/// Where the server's certificate chain and private key live.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key: PathBuf,
    /// How often the files' modification times are checked for a reload
    /// (default 5 s).
    pub poll_interval: Duration,
    /// Also reload on SIGHUP (unix; default false, since a library should
    /// not take over a process-wide signal unasked; the binary turns it on).
    pub reload_on_sighup: bool,
}

impl TlsFiles {
    /// The two files with the default poll interval, no SIGHUP handler.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
            poll_interval: Duration::from_secs(5),
            reload_on_sighup: false,
        }
    }
}

/// Why a certificate or key could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not valid PEM of the expected kind.
    #[error("bad PEM in {path}: {message}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the pair (for example the key does not match the
    /// certificate, or the key type is unsupported).
    #[error("unusable certificate/key: {0}")]
    Rejected(String),
    /// The server was started without TLS.
    #[error("TLS is not enabled on this server")]
    NotEnabled,
}

/// The live acceptor plus what is needed to rebuild it.
pub(crate) struct TlsState {
    files: TlsFiles,
    acceptor: RwLock<TlsAcceptor>,
    /// File stamps of the last load attempt, so a bad file is reported once
    /// per change, not once per poll.
    stamps: Mutex<Stamps>,
}

type Stamps = [Option<(SystemTime, u64)>; 2];

impl TlsState {
    /// Loads the files once; the server does not start on failure.
    pub(crate) fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let stamps = stamps(&files);
        let acceptor = TlsAcceptor::from(build(&files)?);
        Ok(Arc::new(TlsState {
            files,
            acceptor: RwLock::new(acceptor),
            stamps: Mutex::new(stamps),
        }))
    }

    /// The acceptor for a connection accepted now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        match self.acceptor.read() {
            Ok(a) => a.clone(),
            // A panic while swapping cannot leave a half-written acceptor.
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Rebuilds the acceptor from the files; on failure logs and keeps the
    /// old one.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let now = stamps(&self.files);
        if let Ok(mut s) = self.stamps.lock() {
            *s = now;
        }
        match build(&self.files) {
            Ok(cfg) => {
                let new = TlsAcceptor::from(cfg);
                match self.acceptor.write() {
                    Ok(mut a) => *a = new,
                    Err(p) => *p.into_inner() = new,
                }
                info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                error!(error = %e, "TLS reload failed; keeping the previous certificate");
                Err(e)
            }
        }
    }

    /// Reloads when the files change and (if configured) on SIGHUP, until
    /// shutdown.
    pub(crate) async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let period = self.files.poll_interval.max(Duration::from_millis(10));
        // The first check one period from now: the files were just loaded.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hup = sighup(self.files.reload_on_sighup);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => {
                    let now = stamps(&self.files);
                    let changed = self.stamps.lock().map(|s| *s != now).unwrap_or(true);
                    if changed {
                        let _ = self.reload();
                    }
                }
                () = next_hup(&mut hup) => {
                    info!("SIGHUP: reloading the TLS certificate");
                    let _ = self.reload();
                }
            }
        }
    }
}

#[cfg(unix)]
type Hup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hup = Option<()>;

#[cfg(unix)]
fn sighup(on: bool) -> Hup {
    use tokio::signal::unix::{SignalKind, signal};
    if !on {
        return None;
    }
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            error!(error = %e, "cannot listen for SIGHUP; reloading on file changes only");
            None
        }
    }
}

#[cfg(not(unix))]
fn sighup(_on: bool) -> Hup {
    None
}

#[cfg(unix)]
async fn next_hup(hup: &mut Hup) {
    match hup {
        Some(s) => {
            if s.recv().await.is_none() {
                *hup = None;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hup(_hup: &mut Hup) {
    std::future::pending().await
}

/// Modification time and length of both files (None where unreadable).
fn stamps(files: &TlsFiles) -> Stamps {
    let stamp = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    [stamp(&files.cert), stamp(&files.key)]
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn build(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let bad = |path: &Path, message: String| TlsError::BadPem {
        path: path.to_owned(),
        message,
    };
    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(&files.cert, "no CERTIFICATE block".into()));
    }
    let key_pem = read(&files.key)?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad(&files.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rejected(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rejected(e.to_string()))?;
    // Only HTTP/1.1 is spoken: WebSocket upgrades and the plain pages.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
