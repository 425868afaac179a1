//! Checks that the configured TURN servers accept the credentials this
//! server issues: a TURN Allocate over UDP with a credential made from
//! `--turn-secret`, answered by the nonce challenge and then, when the
//! secret is coturn's `static-auth-secret`, by a relayed address (the
//! allocation is freed at once).
//!
//! A wrong secret is otherwise silent until the first call that needs the
//! relay fails, on a user's machine; this says so in the server's log at
//! start. STUN messages are encoded with `rtc-stun` (sans-IO, already in
//! the tree through webrtc); the exchange itself is a few datagrams here.

use std::net::SocketAddr;
use std::time::Duration;

use calling_core::UserId;
use rtc_stun::attributes::{
    ATTR_LIFETIME, ATTR_NONCE, ATTR_REALM, ATTR_REQUESTED_TRANSPORT, ATTR_USERNAME,
    ATTR_XOR_PEER_ADDRESS, ATTR_XOR_RELAYED_ADDRESS, RawAttribute,
};
use rtc_stun::error_code::ErrorCodeAttribute;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter, METHOD_ALLOCATE,
    METHOD_CREATE_PERMISSION, METHOD_REFRESH, Message, MessageType, Setter, TransactionId,
};
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::ice::{TurnConfig, turn_password, turn_username};

/// How long one probe may take, retransmissions included.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The user id the probe's credentials are issued for; it shows in the
/// TURN server's log.
pub const PROBE_USER: &str = "calling-server-check";

/// Why a TURN server did not accept a credential. Each variant says what
/// to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnCheckError {
    /// The server checked the credential and refused it (STUN 401 or 441
    /// after the nonce exchange): with the REST API scheme, the secrets
    /// differ.
    #[error(
        "rejected credentials ({code} {reason}): --turn-secret must equal the TURN server's static-auth-secret"
    )]
    Rejected {
        /// STUN error code (401 or 441).
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// The server answered with another STUN error (403 forbidden, 486
    /// quota, 508 capacity, ...).
    #[error("refused the allocation ({code} {reason})")]
    Refused {
        /// STUN error code.
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// The server allocated a relay without asking for credentials
    /// (coturn's `no-auth`): anyone can relay through it, and it is not
    /// checking ours.
    #[error(
        "allocates without credentials: anyone can use it as a relay; configure use-auth-secret"
    )]
    NoAuthentication,
    /// Nothing came back within [`PROBE_TIMEOUT`]: wrong address or port,
    /// a firewall, or no TURN server there.
    #[error("did not answer within {0:?}")]
    NoAnswer(Duration),
    /// The answer was not what a TURN server sends.
    #[error("answered with something that is not TURN: {0}")]
    BadResponse(String),
    /// The URL cannot be probed: not `turn:`, a transport other than UDP
    /// (TCP and `turns:` are not probed), or a host that does not resolve.
    #[error("cannot probe: {0}")]
    Unprobeable(String),
    /// A local socket error.
    #[error("local socket error: {0}")]
    Io(String),
}

/// The host and port of a `turn:` URL that is reached over UDP.
pub fn udp_target(url: &str) -> Result<(String, u16), TurnCheckError> {
    let bad = |why: &str| TurnCheckError::Unprobeable(format!("{url}: {why}"));
    let rest = url
        .strip_prefix("turn:")
        .ok_or_else(|| bad("only turn: URLs are probed (turns: is TLS)"))?;
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    for param in query.split('&').filter(|p| !p.is_empty()) {
        if let Some(t) = param.strip_prefix("transport=")
            && !t.eq_ignore_ascii_case("udp")
        {
            return Err(bad("only transport=udp is probed"));
        }
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(bad("junk after the IPv6 address")),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad("bad port"))?,
        None => 3478,
    };
    Ok((host.to_owned(), port))
}

/// Allocates a relay at the TURN server of `url` with the long-term
/// credential `username` / `password`, then frees it. Returns the relayed
/// address the server gave.
pub async fn probe(
    url: &str,
    username: &str,
    password: &str,
) -> Result<SocketAddr, TurnCheckError> {
    let alloc = Allocation::new(url, username, password).await?;
    let relayed = alloc.relayed;
    alloc.free().await;
    Ok(relayed)
}

/// Whether the TURN server of `url` lets a client relay to `peer`: allocates
/// as [`probe`] does, asks for a permission for `peer` (CreatePermission),
/// frees the relay. `Ok(())` when it would relay there; a server that
/// refuses the peer (coturn's `denied-peer-ip`) gives
/// [`TurnCheckError::Refused`] with code 403.
pub async fn probe_permission(
    url: &str,
    username: &str,
    password: &str,
    peer: SocketAddr,
) -> Result<(), TurnCheckError> {
    let mut alloc = Allocation::new(url, username, password).await?;
    let answer = alloc
        .request(METHOD_CREATE_PERMISSION, move || vec![Attr::Peer(peer)])
        .await;
    alloc.free().await;
    answer.map(|_| ())
}

/// An attribute of a request, before the credentials.
enum Attr {
    /// As it is on the wire.
    Raw(RawAttribute),
    /// XOR-PEER-ADDRESS, encoded like XOR-MAPPED-ADDRESS (it needs the
    /// transaction id, so it is added to the message being built).
    Peer(SocketAddr),
}

impl Attr {
    fn add_to(&self, m: &mut Message) -> Result<(), TurnCheckError> {
        let done = match self {
            Attr::Raw(raw) => raw.add_to(m),
            Attr::Peer(peer) => XorMappedAddress {
                ip: peer.ip(),
                port: peer.port(),
            }
            .add_to_as(m, ATTR_XOR_PEER_ADDRESS),
        };
        done.map_err(|e| TurnCheckError::Io(format!("cannot encode a STUN request: {e}")))
    }
}

/// A relay allocated with a long-term credential, and what its later
/// requests need to authenticate.
struct Allocation {
    sock: UdpSocket,
    relayed: SocketAddr,
    username: String,
    realm: TextAttribute,
    nonce: TextAttribute,
    key: Vec<u8>,
    crypto: std::sync::Arc<dyn rtc_stun::crypto::RTCCryptoProvider>,
    deadline: Instant,
}

impl Allocation {
    async fn new(url: &str, username: &str, password: &str) -> Result<Self, TurnCheckError> {
        let (host, port) = udp_target(url)?;
        let server = tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                TurnCheckError::Unprobeable(format!("{url}: {host} does not resolve"))
            })?;
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let io = |e: std::io::Error| TurnCheckError::Io(e.to_string());
        let sock = UdpSocket::bind(local).await.map_err(io)?;
        sock.connect(server).await.map_err(io)?;
        let deadline = Instant::now() + PROBE_TIMEOUT;

        // First without credentials: the server answers 401 with its realm
        // and a nonce (RFC 8656 §7.2).
        let challenge = exchange(
            &sock,
            request(METHOD_ALLOCATE, &allocate_attrs(), &[])?,
            deadline,
        )
        .await?;
        if challenge.typ.class == CLASS_SUCCESS_RESPONSE {
            // Free it, unauthenticated as it was made; best effort.
            let zero = [Attr::Raw(RawAttribute {
                typ: ATTR_LIFETIME,
                length: 4,
                value: vec![0; 4],
            })];
            if let Ok(req) = request(METHOD_REFRESH, &zero, &[]) {
                let _ = exchange(&sock, req, Instant::now() + Duration::from_secs(1)).await;
            }
            return Err(TurnCheckError::NoAuthentication);
        }
        let (code, reason) = error_of(&challenge)?;
        if code != 401 {
            return Err(TurnCheckError::Refused { code, reason });
        }
        let realm = text(&challenge, ATTR_REALM)?;
        let crypto = rtc_stun::crypto::default_provider()
            .map_err(|e| TurnCheckError::Io(format!("no crypto provider: {e}")))?;
        let key = MessageIntegrity::long_term_integrity_key(
            username.to_owned(),
            realm.text.clone(),
            password.to_owned(),
            crypto.crypto(),
        )
        .map_err(|e| TurnCheckError::Io(e.to_string()))?;
        let mut alloc = Allocation {
            sock,
            relayed: SocketAddr::from(([0, 0, 0, 0], 0)),
            username: username.to_owned(),
            nonce: text(&challenge, ATTR_NONCE)?,
            realm,
            key,
            crypto,
            deadline,
        };
        let answer = match alloc.request(METHOD_ALLOCATE, allocate_attrs).await {
            // Before the relay exists, a refused credential means the secret.
            Err(TurnCheckError::Refused { code, reason }) if code == 401 || code == 441 => {
                return Err(TurnCheckError::Rejected { code, reason });
            }
            other => other?,
        };
        alloc.relayed = relayed(&answer)?;
        Ok(alloc)
    }

    /// Sends an authenticated request of `method` with `attrs()` and returns
    /// the success answer; an error answer is [`TurnCheckError::Refused`].
    /// A stale nonce (438, which a server may send at any time) is retried
    /// once with the new one.
    async fn request<F>(
        &mut self,
        method: rtc_stun::message::Method,
        attrs: F,
    ) -> Result<Message, TurnCheckError>
    where
        F: Fn() -> Vec<Attr>,
    {
        for _ in 0..2 {
            // Built apart from the await: setters are not Send.
            let req = request(method, &attrs(), &self.auth())?;
            let answer = exchange(&self.sock, req, self.deadline).await?;
            if answer.typ.class == CLASS_SUCCESS_RESPONSE {
                return Ok(answer);
            }
            let (code, reason) = error_of(&answer)?;
            if code != 438 {
                return Err(TurnCheckError::Refused { code, reason });
            }
            self.nonce = text(&answer, ATTR_NONCE)?;
        }
        Err(TurnCheckError::BadResponse("stale nonce twice".into()))
    }

    fn auth(&self) -> Vec<Box<dyn Setter + '_>> {
        vec![
            Box::new(TextAttribute::new(ATTR_USERNAME, self.username.clone())),
            Box::new(self.realm.clone()),
            Box::new(self.nonce.clone()),
            Box::new(MessageIntegrity::new_raw_integrity_with_provider(
                self.key.clone(),
                self.crypto.crypto(),
            )),
        ]
    }

    /// Frees the relay now rather than let it idle for its lifetime; best
    /// effort, within a second.
    async fn free(mut self) {
        self.deadline = Instant::now() + Duration::from_secs(1);
        let zero = || {
            vec![Attr::Raw(RawAttribute {
                typ: ATTR_LIFETIME,
                length: 4,
                value: vec![0; 4],
            })]
        };
        let _ = self.request(METHOD_REFRESH, zero).await;
    }
}

/// Probes every URL of `turn` with a credential issued as for a login at
/// `now_unix`, in order.
pub async fn check(
    turn: &TurnConfig,
    now_unix: u64,
) -> Vec<(String, Result<SocketAddr, TurnCheckError>)> {
    let mut out = Vec::with_capacity(turn.urls.len());
    let Ok(user) = UserId::new(PROBE_USER) else {
        return out;
    };
    let username = turn_username(now_unix.saturating_add(turn.ttl.as_secs().max(60)), &user);
    let password = turn_password(&turn.secret, &username);
    for url in &turn.urls {
        let result = probe(url, &username, &password).await;
        out.push((url.clone(), result));
    }
    out
}

/// Runs [`check`] for a running server: logs each failure as an error
/// saying what to fix, and keeps the count of failing URLs in
/// [`crate::Metrics::turn_check_failures`] (`/metrics`). Cheap to clone.
#[derive(Debug, Clone)]
pub struct TurnChecker {
    pub(crate) turn: Option<TurnConfig>,
    pub(crate) metrics: std::sync::Arc<crate::Metrics>,
}

impl TurnChecker {
    /// Probes every configured TURN URL now; nothing when none is
    /// configured.
    pub async fn run(&self) -> Vec<(String, Result<SocketAddr, TurnCheckError>)> {
        let Some(turn) = &self.turn else {
            return Vec::new();
        };
        let results = check(turn, calling_usersig::now_unix()).await;
        let mut failing = 0;
        for (url, result) in &results {
            match result {
                Ok(relayed) => {
                    tracing::info!(%url, %relayed, "TURN server accepts our credentials")
                }
                Err(e @ TurnCheckError::Rejected { .. }) => {
                    failing += 1;
                    tracing::error!(
                        error = %e,
                        "the TURN server {url} rejected credentials made with --turn-secret: it must equal coturn's static-auth-secret"
                    );
                }
                Err(e @ TurnCheckError::Unprobeable(_)) => {
                    // TCP and TLS URLs: expected, not a fault.
                    tracing::info!(%url, error = %e, "TURN URL not checked");
                }
                Err(e) => {
                    failing += 1;
                    tracing::error!(error = %e, "the TURN server {url} failed the credential check: calls that need the relay will fail");
                }
            }
        }
        self.metrics.turn_check_failures.set(i64::from(failing));
        results
    }
}

/// A request of `method`: `attrs`, then the credentials `auth`, then
/// FINGERPRINT, in the order RFC 8489 wants (integrity after what it covers).
fn request(
    method: rtc_stun::message::Method,
    attrs: &[Attr],
    auth: &[Box<dyn Setter + '_>],
) -> Result<Message, TurnCheckError> {
    let mut m = Message::new();
    let header: [Box<dyn Setter>; 2] = [
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(method, CLASS_REQUEST)),
    ];
    let fail = |e: String| TurnCheckError::Io(format!("cannot encode a STUN request: {e}"));
    m.build(&header).map_err(|e| fail(e.to_string()))?;
    for a in attrs {
        a.add_to(&mut m)?;
    }
    for s in auth {
        s.add_to(&mut m).map_err(|e| fail(e.to_string()))?;
    }
    FINGERPRINT
        .add_to(&mut m)
        .map_err(|e| fail(e.to_string()))?;
    Ok(m)
}

/// REQUESTED-TRANSPORT 17: a UDP relay.
fn allocate_attrs() -> Vec<Attr> {
    vec![Attr::Raw(RawAttribute {
        typ: ATTR_REQUESTED_TRANSPORT,
        length: 4,
        value: vec![17, 0, 0, 0],
    })]
}

/// Sends `req` until its answer comes (retransmitting at 250 ms, then
/// doubling) or `deadline` passes.
async fn exchange(
    sock: &UdpSocket,
    req: Message,
    deadline: Instant,
) -> Result<Message, TurnCheckError> {
    let mut rto = Duration::from_millis(250);
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(TurnCheckError::NoAnswer(PROBE_TIMEOUT));
        }
        // A refused port shows as an error on a connected socket: keep
        // trying until the deadline, a server may be starting.
        let _ = sock.send(&req.raw).await;
        let until = (now + rto).min(deadline);
        while let Ok(got) = tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
            let Ok(n) = got else { break };
            let mut m = Message::new();
            if m.unmarshal_binary(&buf[..n]).is_err() {
                continue;
            }
            if m.transaction_id == req.transaction_id {
                return Ok(m);
            }
        }
        if rto < Duration::from_secs(1) {
            rto *= 2;
        }
    }
}

fn error_of(m: &Message) -> Result<(u16, String), TurnCheckError> {
    if m.typ.class != CLASS_ERROR_RESPONSE {
        return Err(TurnCheckError::BadResponse(format!("unexpected {}", m.typ)));
    }
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m)
        .map_err(|err| TurnCheckError::BadResponse(format!("error without ERROR-CODE: {err}")))?;
    Ok((e.code.0, String::from_utf8_lossy(&e.reason).into_owned()))
}

fn text(
    m: &Message,
    attr: rtc_stun::attributes::AttrType,
) -> Result<TextAttribute, TurnCheckError> {
    TextAttribute::get_from_as(m, attr)
        .map_err(|e| TurnCheckError::BadResponse(format!("401 without {attr}: {e}")))
}

fn relayed(m: &Message) -> Result<SocketAddr, TurnCheckError> {
    let mut a = XorMappedAddress::default();
    a.get_from_as(m, ATTR_XOR_RELAYED_ADDRESS)
        .map_err(|e| TurnCheckError::BadResponse(format!("no relayed address: {e}")))?;
    Ok(SocketAddr::new(a.ip, a.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_udp_turn_urls_are_probed() {
        let t = |u: &str| udp_target(u);
        assert_eq!(
            t("turn:h.example:3478?transport=udp"),
            Ok(("h.example".into(), 3478))
        );
        assert_eq!(t("turn:192.0.2.1"), Ok(("192.0.2.1".into(), 3478)));
        assert_eq!(
            t("turn:[2001:db8::1]:5000"),
            Ok(("2001:db8::1".into(), 5000))
        );
        assert_eq!(t("turn:[2001:db8::1]"), Ok(("2001:db8::1".into(), 3478)));
        for bad in [
            "turns:h:5349",
            "turn:h:3478?transport=tcp",
            "stun:h:3478",
            "turn::3478",
            "turn:h:port",
            "turn:[::1",
        ] {
            assert!(
                matches!(t(bad), Err(TurnCheckError::Unprobeable(_))),
                "{bad}"
            );
        }
    }
}
