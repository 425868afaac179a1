//! TLS on the listen address: wss:// logins with a private CA, untrusted
//! certificates, plain clients on a TLS port, silent peers, reloads, and
//! https:// pages. Certificates are made fresh by rcgen for each test.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use calling_server::{RunningServer, ServerError, TlsError, TlsFiles};
use calling_signal::{
    TlsFailure, Transport, TransportError, TransportEvent, WsConfig, WsTransport,
};
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::Receiver;

/// A test certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate for localhost / 127.0.0.1: (cert PEM, key PEM).
    fn leaf(&self) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A fresh directory for one test's files, removed when dropped.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(test: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!(
        "calling-tls-{}-{test}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Writes cert and key into `dir`, replacing what was there.
fn write_pair(dir: &Path, (cert, key): &(String, String)) -> TlsFiles {
    // Written beside and renamed, as deploy tools do, so a reload never
    // sees half a file.
    for (name, body) in [("cert.pem", cert), ("key.pem", key)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    let mut files = TlsFiles::new(dir.join("cert.pem"), dir.join("key.pem"));
    // Tests reload explicitly unless they test the poll.
    files.poll_interval = Duration::from_secs(3600);
    files
}

async fn start_tls(files: TlsFiles) -> RunningServer {
    start_with(|c| {
        c.tls = Some(files);
        c.login_timeout = Duration::from_millis(500);
    })
    .await
}

fn wss_config(addr: SocketAddr, user: &str, ca: Option<&Ca>) -> WsConfig {
    let mut c = WsConfig::new(format!("wss://{addr}/ws"), APP, uid(user), sig(user));
    c.extra_ca_pem = ca.map(|ca| ca.pem.clone().into_bytes());
    c.reconnect = false;
    c
}

async fn login(
    addr: SocketAddr,
    user: &str,
    ca: Option<&Ca>,
) -> Result<(WsTransport, Receiver<TransportEvent>), TransportError> {
    let t = WsTransport::connect(wss_config(addr, user, ca)).await?;
    let rx = t.take_events().unwrap();
    Ok((t, rx))
}

/// `from` sends to `to`'s user; `rx` (theirs) must get it.
async fn routes(from: &WsTransport, to: &str, rx: &mut Receiver<TransportEvent>, n: u32) {
    from.send(&[uid(to)], json!({ "n": n })).await.unwrap();
    let ev = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    match ev {
        TransportEvent::Message { payload, .. } => assert_eq!(payload, json!({ "n": n })),
        other => panic!("expected a message, got {other:?}"),
    }
}

fn untrusted(r: Result<(WsTransport, Receiver<TransportEvent>), TransportError>) -> bool {
    matches!(
        r,
        Err(TransportError::Tls {
            kind: TlsFailure::Untrusted,
            ..
        })
    )
}

/// A raw HTTPS GET trusting `ca`; returns the whole response.
async fn https_get(addr: SocketAddr, path: &str, ca: &Ca) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut s = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .unwrap()
    .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // The server closes after answering; a missing close_notify is no
    // concern for this check.
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn wss_login_with_extra_ca_routes_messages() {
    let ca = Ca::new("test CA");
    let dir = temp_dir("route");
    let server = start_tls(write_pair(&dir, &ca.leaf())).await;
    let addr = server.local_addr();
    let (alice, _arx) = login(addr, "alice", Some(&ca)).await.unwrap();
    let (bob, mut brx) = login(addr, "bob", Some(&ca)).await.unwrap();
    assert_eq!(server.online(), 2);
    routes(&alice, "bob", &mut brx, 1).await;
    alice.close().await;
    bob.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn extra_ca_from_file() {
    let ca = Ca::new("test CA");
    let dir = temp_dir("cafile");
    let server = start_tls(write_pair(&dir, &ca.leaf())).await;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let mut c = wss_config(server.local_addr(), "alice", None);
    c = c.with_extra_ca_file(&ca_path).unwrap();
    let alice = WsTransport::connect(c).await.unwrap();
    alice.close().await;
    // A file without certificates is refused up front, typed.
    std::fs::write(&ca_path, "not a certificate\n").unwrap();
    let bad = wss_config(server.local_addr(), "bob", None).with_extra_ca_file(&ca_path);
    assert!(matches!(
        bad,
        Err(TransportError::Tls {
            kind: TlsFailure::Config,
            ..
        })
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn untrusted_certificate_is_a_typed_error_on_first_connect() {
    let ca = Ca::new("test CA");
    let other = Ca::new("other CA");
    let dir = temp_dir("untrusted");
    let server = start_tls(write_pair(&dir, &ca.leaf())).await;
    let addr = server.local_addr();
    // System roots only, then another private CA: both refused at once
    // (reconnect is off in wss_config, but connect never retries anyway).
    let mut no_ca = wss_config(addr, "alice", None);
    no_ca.reconnect = true;
    let r = WsTransport::connect(no_ca).await.map(|t| {
        let rx = t.take_events().unwrap();
        (t, rx)
    });
    assert!(untrusted(r));
    assert!(untrusted(login(addr, "alice", Some(&other)).await));
    // The server is unharmed.
    let (alice, _rx) = login(addr, "alice", Some(&ca)).await.unwrap();
    assert_eq!(server.online(), 1);
    alice.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn plain_ws_to_tls_listener_fails_cleanly() {
    let ca = Ca::new("test CA");
    let dir = temp_dir("plain");
    let server = start_tls(write_pair(&dir, &ca.leaf())).await;
    let addr = server.local_addr();
    let mut plain = WsConfig::new(format!("ws://{addr}/ws"), APP, uid("alice"), sig("alice"));
    plain.reconnect = false;
    match WsTransport::connect(plain).await {
        Err(TransportError::Connect(_)) => {}
        Err(e) => panic!("expected a connect error, got {e:?}"),
        Ok(_) => panic!("plain WebSocket logged in on a TLS listener"),
    }
    assert_eq!(server.online(), 0);
    let (alice, _rx) = login(addr, "alice", Some(&ca)).await.unwrap();
    assert_eq!(server.online(), 1);
    assert!(
        https_get(addr, "/healthz", &ca)
            .await
            .starts_with("HTTP/1.1 200 OK")
    );
    alice.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn wss_client_to_plain_listener_is_a_handshake_error() {
    let server = start().await;
    let r = login(server.local_addr(), "alice", None).await;
    assert!(
        matches!(
            r,
            Err(TransportError::Tls {
                kind: TlsFailure::Handshake,
                ..
            })
        ),
        "{:?}",
        r.err()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn silent_client_is_dropped_after_handshake_timeout() {
    let ca = Ca::new("test CA");
    let dir = temp_dir("silent");
    let server = start_tls(write_pair(&dir, &ca.leaf())).await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    // Never send a ClientHello: the server must close (login_timeout is
    // 500 ms here; the bound only keeps a broken server from hanging us).
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("server kept a silent TLS peer open");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert_eq!(server.metrics().tls_handshake_failures.get(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn healthz_and_demo_page_over_https() {
    let ca = Ca::new("test CA");
    let dir = temp_dir("https");
    let server = start_tls(write_pair(&dir, &ca.leaf())).await;
    let addr = server.local_addr();
    let health = https_get(addr, "/healthz", &ca).await;
    assert!(health.starts_with("HTTP/1.1 200 OK"), "{health}");
    assert!(health.ends_with("ok\n"), "{health}");
    let page = https_get(addr, "/", &ca).await;
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("text/html"), "{page}");
    let metrics = https_get(addr, "/metrics", &ca).await;
    assert!(
        metrics.contains("calling_tls_handshake_failures_total 0"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn reload_serves_new_certificate_to_new_connections_only() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let dir = temp_dir("reload");
    let server = start_tls(write_pair(&dir, &old_ca.leaf())).await;
    let addr = server.local_addr();
    let (alice, _arx) = login(addr, "alice", Some(&old_ca)).await.unwrap();

    write_pair(&dir, &new_ca.leaf());
    // Before the reload the old certificate is still served.
    assert!(untrusted(login(addr, "bob", Some(&new_ca)).await));
    server.reload_tls().unwrap();

    let (bob, mut brx) = login(addr, "bob", Some(&new_ca)).await.unwrap();
    assert!(untrusted(login(addr, "carol", Some(&old_ca)).await));
    // Alice's connection, made with the old certificate, still works.
    routes(&alice, "bob", &mut brx, 7).await;
    assert_eq!(server.online(), 2);
    alice.close().await;
    bob.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn bad_files_on_reload_keep_the_old_certificate() {
    let ca = Ca::new("test CA");
    let dir = temp_dir("badreload");
    let files = write_pair(&dir, &ca.leaf());
    let server = start_tls(files.clone()).await;
    let addr = server.local_addr();
    let good_key = std::fs::read_to_string(&files.key).unwrap();

    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    assert!(matches!(server.reload_tls(), Err(TlsError::BadPem { .. })));
    let (alice, _rx) = login(addr, "alice", Some(&ca)).await.unwrap();

    // A valid certificate whose key is another one's.
    let (other_cert, _) = Ca::new("other CA").leaf();
    std::fs::write(&files.cert, other_cert).unwrap();
    std::fs::write(&files.key, good_key).unwrap();
    assert!(matches!(server.reload_tls(), Err(TlsError::Rejected(_))));

    std::fs::remove_file(&files.key).unwrap();
    assert!(matches!(server.reload_tls(), Err(TlsError::Read { .. })));

    let (bob, _brx) = login(addr, "bob", Some(&ca)).await.unwrap();
    assert_eq!(server.online(), 2);
    alice.close().await;
    bob.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn changed_files_are_reloaded_by_the_poll() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let dir = temp_dir("poll");
    let mut files = write_pair(&dir, &old_ca.leaf());
    files.poll_interval = Duration::from_millis(50);
    let server = start_tls(files).await;
    let addr = server.local_addr();
    write_pair(&dir, &new_ca.leaf());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let bob = loop {
        match login(addr, "bob", Some(&new_ca)).await {
            Ok((bob, _)) => break bob,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert!(matches!(e, TransportError::Tls { .. }), "{e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("new certificate never served: {e:?}"),
        }
    };
    bob.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn reload_without_tls_is_refused() {
    let server = start().await;
    assert!(matches!(server.reload_tls(), Err(TlsError::NotEnabled)));
    server.shutdown().await;
}

#[tokio::test]
async fn unusable_files_stop_the_server_from_starting() {
    let dir = temp_dir("nostart");
    let mut c = config();
    c.tls = Some(TlsFiles::new(
        dir.join("missing.pem"),
        dir.join("missing.key"),
    ));
    match calling_server::Server::bind(c).await {
        Err(ServerError::Tls(TlsError::Read { .. })) => {}
        other => panic!("expected a TLS read error, got {other:?}"),
    }
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    std::fs::write(dir.join("empty.key"), "").unwrap();
    let mut c = config();
    c.tls = Some(TlsFiles::new(dir.join("empty.pem"), dir.join("empty.key")));
    assert!(matches!(
        calling_server::Server::bind(c).await,
        Err(ServerError::Tls(TlsError::BadPem { .. }))
    ));
}
