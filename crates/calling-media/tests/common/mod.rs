//! A harness that runs several sessions in one process and carries their
//! signals to each other, the way the call layer will.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calling_media::{
    ChannelSink, EncodedFrame, FrameSink, MediaConfig, MediaEvent, MediaKind, MediaSession,
    MediaSignal, RemoteFrame, UserId,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Upper bound for any wait in a test.
pub const WAIT: Duration = Duration::from_secs(20);

/// A user id from a name the test knows to be valid.
pub fn uid(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

/// Every signal the router carried: (from, to, signal).
pub type SignalLog = Arc<Mutex<Vec<(String, String, MediaSignal)>>>;

pub struct Node {
    pub name: String,
    pub id: UserId,
    pub session: MediaSession,
    /// Non-signal events of this session.
    pub events: mpsc::UnboundedReceiver<MediaEvent>,
    pub frames: mpsc::Receiver<RemoteFrame>,
    pub sink: Arc<ChannelSink>,
}

pub struct Mesh {
    pub nodes: Vec<Node>,
    pub log: SignalLog,
}

/// Builds sessions for `names` and routes their signals.
pub async fn mesh(names: &[&str]) -> Mesh {
    mesh_with(names, |c| c).await
}

/// [`mesh`] with each session's config changed by `tweak`.
pub async fn mesh_with(names: &[&str], tweak: impl Fn(MediaConfig) -> MediaConfig) -> Mesh {
    build(names, tweak, None).await
}

/// A change the router makes to each signal on its way: (from, signal).
pub type Rewrite = Arc<dyn Fn(&str, MediaSignal) -> MediaSignal + Send + Sync>;

/// [`mesh`] whose router passes every signal through `rewrite`, as another
/// WebRTC stack would describe the same session differently.
pub async fn mesh_rewriting(names: &[&str], rewrite: Rewrite) -> Mesh {
    build_with(names, |c| c, None, Some(rewrite)).await
}

/// [`mesh`] whose media all travels through UDP relays that the returned
/// [`Path`] can cut, as a lost network would.
pub async fn mesh_relayed(names: &[&str]) -> (Mesh, Path) {
    let path = Path::default();
    let mesh = build(names, |c| c, Some(path.clone())).await;
    (mesh, path)
}

/// The relays of a [`mesh_relayed`]: all of them pass or drop together.
#[derive(Clone, Default)]
pub struct Path {
    cut: Arc<AtomicBool>,
    /// (session, candidate address) to the relay standing in front of it.
    relays: Arc<tokio::sync::Mutex<HashMap<(UserId, SocketAddr), SocketAddr>>>,
}

impl Path {
    /// Drops every packet from now on (`true`), or passes them again.
    pub fn cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Release);
    }

    /// The signal from `from` with its candidate's address replaced by a
    /// relay's, and its SDP without candidates, so that no packet between
    /// the sessions can go around the relays.
    async fn reroute(&self, from: &UserId, signal: MediaSignal) -> MediaSignal {
        match signal {
            MediaSignal::Offer { sdp } => MediaSignal::Offer {
                sdp: without_candidates(&sdp),
            },
            MediaSignal::Answer { sdp } => MediaSignal::Answer {
                sdp: without_candidates(&sdp),
            },
            MediaSignal::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
                username_fragment,
            } => {
                // candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
                let mut fields: Vec<String> =
                    candidate.split_whitespace().map(str::to_owned).collect();
                let target = fields
                    .get(4)
                    .zip(fields.get(5))
                    .and_then(|(ip, port)| format!("{ip}:{port}").parse::<SocketAddr>().ok());
                if let Some(target) = target {
                    let mut relays = self.relays.lock().await;
                    let relay = match relays.get(&(from.clone(), target)) {
                        Some(r) => *r,
                        None => {
                            let r = relay(target, self.cut.clone()).await;
                            relays.insert((from.clone(), target), r);
                            r
                        }
                    };
                    fields[4] = relay.ip().to_string();
                    fields[5] = relay.port().to_string();
                }
                MediaSignal::Candidate {
                    candidate: fields.join(" "),
                    sdp_mid,
                    sdp_mline_index,
                    username_fragment,
                }
            }
        }
    }
}

fn without_candidates(sdp: &str) -> String {
    sdp.split_inclusive('\n')
        .filter(|line| !line.starts_with("a=candidate:"))
        .collect()
}

/// A UDP relay in front of `target`: what `target` sends goes to whoever
/// last sent to the relay, the rest goes to `target`; while `cut`, nothing
/// passes. Returns the relay's address.
async fn relay(target: SocketAddr, cut: Arc<AtomicBool>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut other = None;
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            if cut.load(Ordering::Acquire) {
                continue;
            }
            let to = if from == target {
                other
            } else {
                other = Some(from);
                Some(target)
            };
            if let Some(to) = to {
                let _ = socket.send_to(&buf[..n], to).await;
            }
        }
    });
    addr
}

async fn build(
    names: &[&str],
    tweak: impl Fn(MediaConfig) -> MediaConfig,
    path: Option<Path>,
) -> Mesh {
    build_with(names, tweak, path, None).await
}

async fn build_with(
    names: &[&str],
    tweak: impl Fn(MediaConfig) -> MediaConfig,
    path: Option<Path>,
    rewrite: Option<Rewrite>,
) -> Mesh {
    let log: SignalLog = Arc::new(Mutex::new(Vec::new()));
    let mut sessions = HashMap::new();
    let mut raw = Vec::new();
    for name in names {
        let (s, rx) = MediaSession::new(uid(name), tweak(MediaConfig::loopback()))
            .await
            .unwrap();
        sessions.insert(uid(name), s.clone());
        raw.push((name.to_string(), s, rx));
    }
    let mut nodes = Vec::new();
    for (name, session, mut rx) in raw {
        let (tx, events) = mpsc::unbounded_channel();
        let peers = sessions.clone();
        let log = log.clone();
        let from = uid(&name);
        let path = path.clone();
        let rewrite = rewrite.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                match ev {
                    MediaEvent::Signal { to, signal } => {
                        let signal = match &path {
                            Some(path) => path.reroute(&from, signal).await,
                            None => signal,
                        };
                        let signal = match &rewrite {
                            Some(rewrite) => rewrite(from.as_str(), signal),
                            None => signal,
                        };
                        log.lock().unwrap().push((
                            from.to_string(),
                            to.to_string(),
                            signal.clone(),
                        ));
                        if let Some(peer) = peers.get(&to) {
                            if let Err(e) = peer.handle_signal(&from, signal).await {
                                panic!("{to} rejected a signal from {from}: {e}");
                            }
                        }
                    }
                    other => {
                        let _ = tx.send(other);
                    }
                }
            }
        });
        let (sink, frames) = ChannelSink::new(4096);
        session.set_frame_sink(Some(sink.clone() as Arc<dyn FrameSink>));
        nodes.push(Node {
            id: uid(&name),
            name,
            session,
            events,
            frames,
            sink,
        });
    }
    Mesh { nodes, log }
}

impl Mesh {
    pub fn node(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    pub fn session(&self, name: &str) -> MediaSession {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap()
            .session
            .clone()
    }

    /// Every pair connects, at once: the answering sides first, as a call's
    /// members know each other before an offer comes (a session takes
    /// signals only from the users it connected to).
    pub async fn connect_all(&self) {
        for offerers in [false, true] {
            self.connect_pairs(offerers).await;
        }
    }

    async fn connect_pairs(&self, offerers: bool) {
        let mut tasks = Vec::new();
        for a in &self.nodes {
            for b in &self.nodes {
                if a.name != b.name && calling_media::is_offerer(&a.id, &b.id) == offerers {
                    let s = a.session.clone();
                    let remote = b.id.clone();
                    tasks.push(tokio::spawn(async move { s.connect(&remote).await }));
                }
            }
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }

    pub fn offers(&self) -> Vec<(String, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, s)| matches!(s, MediaSignal::Offer { .. }))
            .map(|(f, t, _)| (f.clone(), t.clone()))
            .collect()
    }

    pub async fn close(self) {
        for n in &self.nodes {
            n.session.close().await;
        }
    }
}

impl Node {
    /// Waits for a frame matching `pred`, collecting everything received
    /// on the way (including the match).
    pub async fn frames_until(
        &mut self,
        mut pred: impl FnMut(&RemoteFrame) -> bool,
    ) -> Vec<RemoteFrame> {
        let mut seen = Vec::new();
        let res = tokio::time::timeout(WAIT, async {
            while let Some(f) = self.frames.recv().await {
                let done = pred(&f);
                seen.push(f);
                if done {
                    return;
                }
            }
            panic!("frame channel closed");
        })
        .await;
        if res.is_err() {
            let summary: Vec<_> = seen
                .iter()
                .map(|f| (f.user.clone(), f.frame.codec))
                .collect();
            panic!(
                "{}: timed out waiting for a frame; got {} frames: {:?}",
                self.name,
                seen.len(),
                &summary[summary.len().saturating_sub(10)..]
            );
        }
        seen
    }

    /// Waits until `n` frames of `kind` from `user` arrived; returns all
    /// frames seen meanwhile.
    pub async fn collect(&mut self, user: &str, kind: MediaKind, n: usize) -> Vec<RemoteFrame> {
        let mut count = 0;
        self.frames_until(|f| {
            if f.user.as_str() == user && f.frame.kind() == kind {
                count += 1;
            }
            count >= n
        })
        .await
    }

    /// Waits for an event matching `pred`.
    pub async fn event(&mut self, mut pred: impl FnMut(&MediaEvent) -> bool) -> MediaEvent {
        tokio::time::timeout(WAIT, async {
            while let Some(e) = self.events.recv().await {
                if pred(&e) {
                    return e;
                }
            }
            panic!("event channel closed");
        })
        .await
        .unwrap_or_else(|_| panic!("{}: timed out waiting for an event", self.name))
    }
}

pub fn of<'a>(
    frames: &'a [RemoteFrame],
    user: &'a str,
    kind: MediaKind,
) -> impl Iterator<Item = &'a EncodedFrame> + 'a {
    frames
        .iter()
        .filter(move |f| f.user.as_str() == user && f.frame.kind() == kind)
        .map(|f| &f.frame)
}

/// Checks an Opus packet's TOC byte (RFC 6716 §3.1) and decodes it.
pub fn assert_opus_decodes(packet: &[u8]) {
    assert!(packet.len() >= 2, "Opus packet too short: {}", packet.len());
    let config = packet[0] >> 3;
    assert!(config < 32);
    let mut dec = opus_rs::OpusDecoder::new(48_000, 1).unwrap();
    let mut pcm = vec![0f32; 5760];
    let n = dec.decode(packet, 5760, &mut pcm).unwrap();
    assert_eq!(n, 960, "20 ms frames expected");
}

/// Decodes an H.264 key frame and returns its picture size.
pub fn decode_h264(au: &[u8]) -> (usize, usize) {
    use openh264::formats::YUVSource;
    let mut dec = openh264::decoder::Decoder::new().unwrap();
    let pic = dec
        .decode(au)
        .unwrap()
        .expect("a key frame decodes to a picture");
    pic.dimensions()
}
