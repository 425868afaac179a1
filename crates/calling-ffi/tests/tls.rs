//! `calling_config_set_extra_ca_pem`: a C client logs in over wss:// to a
//! calling-server whose certificate comes from a private CA, and only when
//! it trusts that CA. Certificates are made by rcgen at test time.

#![allow(clippy::unwrap_used)]

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr;

use calling_ffi::*;
use calling_server::{Config, RunningServer, Server, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

const APP: u64 = 1_400_000_004;
const KEY: &str = "ffi-tls-secret";

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a CA (ca.pem) and a localhost certificate signed by it into a
/// fresh directory.
fn pki() -> TempDir {
    let dir = std::env::temp_dir().join(format!(
        "calling-ffi-tls-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ffi test CA");
    let ca_key = KeyPair::generate().unwrap();
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("junk.pem"), "no certificate here\n").unwrap();
    TempDir(dir)
}

fn server(dir: &Path) -> (tokio::runtime::Runtime, RunningServer, CString) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(async {
        let mut config = Config::new(APP, KEY);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.tls = Some(TlsFiles::new(dir.join("cert.pem"), dir.join("key.pem")));
        Server::bind(config).await.unwrap()
    });
    let url = CString::new(format!("wss://{}/ws", server.local_addr())).unwrap();
    (rt, server, url)
}

fn cpath(p: PathBuf) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

/// Logs in as `user` over `url`, trusting `ca` if given; the login result
/// and the client's last error.
fn login(url: &CString, ca: Option<&CString>, user: &str) -> (calling_result, String) {
    let mut config = ptr::null_mut();
    let mut client = ptr::null_mut();
    let user = CString::new(user).unwrap();
    let sig = CString::new(calling::usersig::generate(
        APP,
        KEY,
        user.to_str().unwrap(),
        3600,
        calling::usersig::now_unix(),
    ))
    .unwrap();
    // SAFETY: valid pointers; the config and client are freed once.
    unsafe {
        assert_eq!(
            calling_config_new(&mut config),
            calling_result::CALLING_RESULT_OK
        );
        assert_eq!(
            calling_config_set_server_url(config, url.as_ptr()),
            calling_result::CALLING_RESULT_OK
        );
        assert_eq!(
            calling_config_set_sdk_app_id(config, APP),
            calling_result::CALLING_RESULT_OK
        );
        assert_eq!(
            calling_config_set_video_source(config, 0),
            calling_result::CALLING_RESULT_OK
        );
        if let Some(ca) = ca {
            assert_eq!(
                calling_config_set_extra_ca_pem(config, ca.as_ptr()),
                calling_result::CALLING_RESULT_OK
            );
        }
        assert_eq!(
            calling_client_new(config, &mut client),
            calling_result::CALLING_RESULT_OK
        );
        calling_config_free(config);
        let r = calling_client_login(client, user.as_ptr(), sig.as_ptr());
        let mut out: *mut std::ffi::c_char = ptr::null_mut();
        assert_eq!(
            calling_client_last_error(client, &mut out),
            calling_result::CALLING_RESULT_OK
        );
        let error = std::ffi::CStr::from_ptr(out).to_str().unwrap().to_owned();
        calling_string_free(out);
        calling_client_free(client);
        (r, error)
    }
}

#[test]
fn wss_login_needs_the_extra_ca() {
    let dir = pki();
    let (_rt, _server, url) = server(&dir.0);
    let ca = cpath(dir.0.join("ca.pem"));
    assert_eq!(
        login(&url, Some(&ca), "alice").0,
        calling_result::CALLING_RESULT_OK
    );
    // System roots only: the private CA's certificate does not verify.
    let (r, error) = login(&url, None, "bob");
    assert_eq!(r, calling_result::CALLING_RESULT_IO);
    assert!(error.contains("certificate not trusted"), "{error}");
}

#[test]
fn unusable_ca_files_are_refused_and_leave_the_config_alone() {
    let dir = pki();
    let mut config = ptr::null_mut();
    let missing = cpath(dir.0.join("missing.pem"));
    let junk = cpath(dir.0.join("junk.pem"));
    let ca = cpath(dir.0.join("ca.pem"));
    // SAFETY: a live config, NUL-terminated paths, NULL where said.
    unsafe {
        assert_eq!(
            calling_config_new(&mut config),
            calling_result::CALLING_RESULT_OK
        );
        for bad in [&missing, &junk] {
            assert_eq!(
                calling_config_set_extra_ca_pem(config, bad.as_ptr()),
                calling_result::CALLING_RESULT_INVALID_ARGUMENT
            );
        }
        assert_eq!(
            calling_config_set_extra_ca_pem(config, ca.as_ptr()),
            calling_result::CALLING_RESULT_OK
        );
        assert_eq!(
            calling_config_set_extra_ca_pem(config, ptr::null()),
            calling_result::CALLING_RESULT_OK
        );
        assert_eq!(
            calling_config_set_extra_ca_pem(ptr::null_mut(), ca.as_ptr()),
            calling_result::CALLING_RESULT_NULL_PARAMETER
        );
        calling_config_free(config);
    }
}

/// Tells apart the directories of tests running at once in one process.
fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
