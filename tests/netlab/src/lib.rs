//! The NAT lab: network namespaces, veth links and nftables NAT built by the
//! test itself, so that calls cross real kernel NATs between "homes" and a
//! "public" segment holding calling-server (TLS) and a real coturn. Only
//! TEST-NET addresses are used, and everything is removed when the [`Lab`]
//! is dropped (also when a test panics); namespaces left by a crashed run
//! are removed by the next one.
//!
//! The machines run `lab-node` (this crate's binary) under
//! `ip netns exec`; see `docs/NETLAB.md` for the topology and the JSON
//! lines each node prints.
//!
//! ```no_run
//! use calling_netlab::{Lab, Nat};
//!
//! // Needs root; the tests check with `calling_netlab::prerequisites`.
//! let lab = Lab::new("doc", Nat::PortRestrictedCone, Nat::Symmetric, 1);
//! let out = lab.exec(&lab.clients_a()[0], &["ip", "-4", "addr"]);
//! assert!(out.contains("192.0.2.11"));
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The app id every lab node uses.
pub const APP: u64 = 1_400_000_000;
/// The UserSig key every lab node uses.
pub const KEY: &str = "netlab-secret-key";
/// The TURN REST API secret coturn checks (and the server signs with,
/// unless a test gives it another one).
pub const TURN_SECRET: &str = "netlab-turn-secret";

/// The public segment: the server and coturn's first address.
pub const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// coturn's second address, so that one socket can ask two STUN servers.
pub const PUBLIC_IP2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// Home A's router, public side.
pub const WAN_A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Home B's router, public side.
pub const WAN_B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
/// The address home A's router moves to in the address-change test.
pub const WAN_A_MOVED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
/// The port calling-server listens on (https:// and wss://).
pub const SERVER_PORT: u16 = 8443;
/// coturn's port (STUN and TURN over UDP).
pub const TURN_PORT: u16 = 3478;

/// Every namespace of the lab starts with this, then the pid of the test
/// process, so a later run can tell leftovers of a dead one.
const PREFIX: &str = "clab";

/// How a home router translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Plain `masquerade`: Linux keeps the source port (one public port
    /// per socket, whatever the destination) and lets in only replies to
    /// what went out (address- and port-dependent filtering).
    PortRestrictedCone,
    /// `masquerade random,fully-random`: a new random public port for
    /// every destination, so a STUN server's view is useless to a peer.
    Symmetric,
}

/// `true` when the lab can run: root, `ip netns`, `nft`, `conntrack` and
/// `turnserver`. Otherwise panics under CI (so CI cannot pass without
/// having run the lab) and prints a loud SKIPPED banner elsewhere.
pub fn prerequisites(test: &str) -> bool {
    // Once per process: tests run in parallel threads, and one probe
    // namespace at a time.
    static MISSING: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let missing = MISSING.get_or_init(missing_tools);
    if missing.is_empty() {
        return true;
    }
    let what = missing.join(", ");
    if std::env::var_os("CI").is_some() {
        panic!("NAT lab test {test} cannot run under CI: {what}; run scripts/setup.sh as root");
    }
    // Straight to stderr: libtest captures eprintln! of passing tests.
    let banner = format!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED NAT lab test {test}: {what}.\n\
         !!! The lab needs root (network namespaces) and scripts/setup.sh.\n\
         !!! This test did NOT run.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    let _ = std::io::stderr().write_all(banner.as_bytes());
    false
}

/// What stops the lab from running here, as readable reasons.
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    for (tool, package) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("conntrack", "conntrack"),
        ("turnserver", "coturn"),
    ] {
        if which(tool).is_none() {
            missing.push(format!("{tool} missing (Debian package {package})"));
        }
    }
    if missing.is_empty() {
        // The real test: can we make a namespace (root, not in a jail that
        // forbids it)?
        let name = format!("{PREFIX}{}probe", std::process::id());
        let ok = quiet(&["ip", "netns", "add", &name]);
        let _ = quiet(&["ip", "netns", "del", &name]);
        if !ok {
            missing.push("cannot create network namespaces (needs root)".into());
        }
    }
    missing
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs a command, true when it succeeded; output discarded.
fn quiet(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs a command and returns its stdout; panics with its stderr on failure.
fn run(args: &[&str]) -> String {
    run_with_input(args, None)
}

fn run_with_input(args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("{args:?}: stdin: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        input.unwrap_or("")
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes namespaces of earlier runs whose test process is gone.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|pid| pid == std::process::id() || process_alive(pid));
        if !alive {
            delete_namespace(name);
        }
    }
}

/// Whether `pid` runs: a killed test whose parent has not reaped it yet
/// is a zombie, and its namespaces are just as stale.
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Kills whatever still runs in `ns`, then removes it.
fn delete_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = quiet(&["kill", "-9", pid]);
        }
    }
    let _ = quiet(&["ip", "netns", "del", ns]);
}

/// Which lab of this process: tests run in parallel threads.
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// One topology: a public segment, home A (router and `n` clients on one
/// LAN) and home B (router and one client), torn down on drop.
///
/// ```text
///                        public  203.0.113.0/24 (bridge)
///             server + coturn 203.0.113.1, coturn also .2
///                 |                                |
///        router A wan 203.0.113.10        router B wan 203.0.113.20
///        NAT (nat_a)  lan 192.0.2.1       NAT (nat_b)  lan 198.51.100.1
///           |             |                        |
///     client a1 .11   client a2 .12          client b1 198.51.100.11
/// ```
pub struct Lab {
    tag: String,
    namespaces: Vec<String>,
    children: Mutex<Vec<Child>>,
    dir: PathBuf,
    clients_a: Vec<String>,
    client_b: String,
}

impl Lab {
    /// Builds the topology. `tag` (a few letters) names it in `ip netns
    /// list`; `clients_a` is how many clients home A has (1 or 2).
    pub fn new(tag: &str, nat_a: Nat, nat_b: Nat, clients_a: usize) -> Lab {
        remove_stale_namespaces();
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{PREFIX}{}-{n}{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut lab = Lab {
            namespaces: Vec::new(),
            children: Mutex::new(Vec::new()),
            dir,
            clients_a: Vec::new(),
            client_b: String::new(),
            tag,
        };
        let public = lab.add_ns("pub");
        lab.ip(&public, &["link", "add", "br0", "type", "bridge"]);
        lab.ip(&public, &["link", "set", "br0", "up"]);
        for ip in [PUBLIC_IP, PUBLIC_IP2] {
            lab.ip(&public, &["addr", "add", &format!("{ip}/24"), "dev", "br0"]);
        }
        // Packets for private addresses vanish upstream, as on the
        // internet: the default route points at a gateway MAC nobody has,
        // so they are dropped silently. Without it coturn's sends to a
        // peer's host candidate fail (ENETUNREACH; EINVAL with a blackhole
        // route) and coturn closes the whole allocation.
        let void = "203.0.113.254";
        lab.ip(
            &public,
            &[
                "neigh",
                "add",
                void,
                "lladdr",
                "02:00:00:00:00:fe",
                "dev",
                "br0",
                "nud",
                "permanent",
            ],
        );
        lab.ip(
            &public,
            &["route", "add", "default", "via", void, "dev", "br0"],
        );
        let homes = [
            ("a", WAN_A, [192, 0, 2], nat_a, clients_a),
            ("b", WAN_B, [198, 51, 100], nat_b, 1),
        ];
        for (home, wan, lan, nat, clients) in homes {
            let router = lab.add_ns(&format!("r{home}"));
            let uplink = format!("up{home}");
            run(&[
                "ip", "link", "add", "wan", "netns", &router, "type", "veth", "peer", "name",
                &uplink, "netns", &public,
            ]);
            lab.ip(&public, &["link", "set", &uplink, "master", "br0", "up"]);
            lab.ip(
                &router,
                &["addr", "add", &format!("{wan}/24"), "dev", "wan"],
            );
            lab.ip(&router, &["link", "set", "wan", "up"]);
            lab.ip(
                &router,
                &["route", "add", "default", "via", &PUBLIC_IP.to_string()],
            );
            lab.ip(&router, &["link", "add", "lan", "type", "bridge"]);
            lab.ip(&router, &["link", "set", "lan", "up"]);
            let [x, y, z] = lan;
            lab.ip(
                &router,
                &["addr", "add", &format!("{x}.{y}.{z}.1/24"), "dev", "lan"],
            );
            lab.exec(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            lab.nat(&router, nat);
            for i in 1..=clients {
                let client = lab.add_ns(&format!("{home}{i}"));
                let port = format!("p{i}");
                run(&[
                    "ip", "link", "add", "eth0", "netns", &client, "type", "veth", "peer", "name",
                    &port, "netns", &router,
                ]);
                lab.ip(&router, &["link", "set", &port, "master", "lan", "up"]);
                let addr = format!("{x}.{y}.{z}.{}/24", 10 + i);
                lab.ip(&client, &["addr", "add", &addr, "dev", "eth0"]);
                lab.ip(&client, &["link", "set", "eth0", "up"]);
                lab.ip(
                    &client,
                    &["route", "add", "default", "via", &format!("{x}.{y}.{z}.1")],
                );
                if home == "a" {
                    lab.clients_a.push(client);
                } else {
                    lab.client_b = client;
                }
            }
        }
        lab
    }

    fn add_ns(&mut self, short: &str) -> String {
        let name = format!("{}{short}", self.tag);
        run(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        self.ip(&name, &["link", "set", "lo", "up"]);
        name
    }

    fn ip(&self, ns: &str, args: &[&str]) {
        let mut all = vec!["ip", "-n", ns];
        all.extend_from_slice(args);
        run(&all);
    }

    /// The router's NAT and firewall: masquerade out of `wan`; in, only
    /// replies. Dropping unsolicited packets in `input` also keeps them
    /// from leaving a conntrack entry that would steal the port a later
    /// outgoing mapping wants (as a home router does).
    fn nat(&self, router: &str, nat: Nat) {
        let flags = match nat {
            Nat::PortRestrictedCone => "",
            Nat::Symmetric => " random,fully-random",
        };
        let rules = format!(
            "table ip nat {{\n\
               chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
                 oifname \"wan\" masquerade{flags}\n\
               }}\n\
             }}\n\
             table inet filter {{\n\
               chain input {{ type filter hook input priority filter; policy drop;\n\
                 ct state established,related accept\n\
                 iifname != \"wan\" accept\n\
               }}\n\
               chain forward {{ type filter hook forward priority filter; policy drop;\n\
                 ct state established,related accept\n\
                 iifname \"lan\" accept\n\
               }}\n\
             }}\n"
        );
        run_with_input(
            &["ip", "netns", "exec", router, "nft", "-f", "-"],
            Some(&rules),
        );
    }

    /// The public namespace (server and coturn).
    pub fn public(&self) -> String {
        format!("{}pub", self.tag)
    }

    /// Home A's router namespace.
    pub fn router_a(&self) -> String {
        format!("{}ra", self.tag)
    }

    /// Home B's router namespace.
    pub fn router_b(&self) -> String {
        format!("{}rb", self.tag)
    }

    /// Home A's client namespaces (LAN addresses 192.0.2.11, .12).
    pub fn clients_a(&self) -> &[String] {
        &self.clients_a
    }

    /// Home B's client namespace (LAN address 198.51.100.11).
    pub fn client_b(&self) -> &str {
        &self.client_b
    }

    /// A scratch directory removed with the lab.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `args` inside `ns` and returns stdout; panics on failure.
    pub fn exec(&self, ns: &str, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Starts `args` inside `ns`, reading its stdout as JSON lines. The
    /// process is killed when the lab is dropped, if it has not ended.
    pub fn spawn(&self, ns: &str, name: &str, args: &[&str]) -> Node {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stdout) = child.stdout.take() {
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in lossy_lines(stdout) {
                    let value = serde_json::from_str(&line)
                        .unwrap_or_else(|_| serde_json::json!({"type": "text", "text": line}));
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(value);
                }
            });
        }
        if let Some(stderr) = child.stderr.take() {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in lossy_lines(stderr) {
                    let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let stdin = child.stdin.take();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        Node {
            name: name.to_string(),
            stdin: Mutex::new(stdin),
            lines,
            log,
        }
    }

    /// Starts a real coturn in the public namespace on both public
    /// addresses, port 3478, checking TURN REST credentials against
    /// `secret`, and waits until it answers STUN.
    pub fn start_coturn(&self, secret: &str) -> Node {
        let dir = self.dir.join("coturn");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let node = self.spawn(
            &self.public(),
            "coturn",
            &[
                // coturn writes its log through stdio: line-buffer it, or
                // the lab sees it only in 4 KiB blocks.
                "stdbuf",
                "-oL",
                "turnserver",
                "-n",
                &format!("--listening-ip={PUBLIC_IP}"),
                &format!("--listening-ip={PUBLIC_IP2}"),
                &format!("--relay-ip={PUBLIC_IP}"),
                &format!("--listening-port={TURN_PORT}"),
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
                "--realm=calling",
                "--fingerprint",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--log-file=stdout",
                "--simple-log",
                "--verbose",
                &format!("--pidfile={}", dir.join("pid").display()),
                &format!("--db={}", dir.join("turndb").display()),
            ],
        );
        // Answering STUN on both addresses, asked from the public side.
        let deadline = Instant::now() + Duration::from_secs(20);
        let servers = [
            format!("{PUBLIC_IP}:{TURN_PORT}"),
            format!("{PUBLIC_IP2}:{TURN_PORT}"),
        ];
        loop {
            let mapped = self.stun_probe(&self.public(), &servers);
            if mapped.iter().all(Option::is_some) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "coturn never answered STUN:\n{}",
                node.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        node
    }

    /// Kills the running coturn (SIGKILL: its allocations die with it, as
    /// in a crash) and starts a fresh one with `secret` on the same
    /// addresses.
    pub fn restart_coturn(&self, secret: &str) -> Node {
        let pidfile = self.dir.join("coturn").join("pid");
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()));
        let pid = pid.trim();
        assert!(quiet(&["kill", "-9", pid]), "cannot kill coturn {pid}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(pid.parse().unwrap_or(0)) {
            assert!(Instant::now() < deadline, "coturn {pid} does not die");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&pidfile);
        self.start_coturn(secret)
    }

    /// The public address (ip:port) each STUN server saw for one UDP
    /// socket in `ns`, in order (`None` where no answer came).
    pub fn stun_probe(&self, ns: &str, servers: &[String]) -> Vec<Option<String>> {
        let mut args = vec![lab_node(), "stun-probe"];
        for s in servers {
            args.push("--server");
            args.push(s);
        }
        let out = self.exec(ns, &args);
        out.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "mapped")
            .map(|v| v["mapped"].as_str().map(str::to_string))
            .collect()
    }

    /// The lab's CA and a server certificate for [`PUBLIC_IP`] signed by
    /// it, written into the lab's directory.
    pub fn pki(&self) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, PublicKeyData,
        };
        use sha2::Digest;

        let fail = |e: rcgen::Error| -> ! { panic!("rcgen: {e}") };
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| fail(e));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "calling NAT lab CA");
        let ca_key = KeyPair::generate().unwrap_or_else(|e| fail(e));
        let ca_pem = ca.self_signed(&ca_key).unwrap_or_else(|e| fail(e)).pem();
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf =
            CertificateParams::new(vec![PUBLIC_IP.to_string()]).unwrap_or_else(|e| fail(e));
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap_or_else(|e| fail(e));
        let cert = leaf.signed_by(&key, &issuer).unwrap_or_else(|e| fail(e));
        let spki = sha2::Sha256::digest(key.subject_public_key_info());
        let pki = Pki {
            ca: self.dir.join("ca.pem"),
            cert: self.dir.join("cert.pem"),
            key: self.dir.join("key.pem"),
            spki_sha256: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, spki),
        };
        for (path, pem) in [
            (&pki.ca, ca_pem),
            (&pki.cert, cert.pem()),
            (&pki.key, key.serialize_pem()),
        ] {
            std::fs::write(path, pem).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        pki
    }

    /// Starts `lab-node server` in the public namespace on
    /// [`PUBLIC_IP`]:[`SERVER_PORT`] with TLS, plus `extra` flags, and
    /// waits until it listens.
    pub fn start_server(&self, pki: &Pki, extra: &[&str]) -> Node {
        let listen = format!("{PUBLIC_IP}:{SERVER_PORT}");
        let cert = pki.cert.display().to_string();
        let key = pki.key.display().to_string();
        let mut args = vec![
            lab_node(),
            "server",
            "--listen",
            &listen,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ];
        args.extend_from_slice(extra);
        let node = self.spawn(&self.public(), "server", &args);
        node.wait_for(Duration::from_secs(20), |v| v["type"] == "listening");
        node
    }

    /// A Rust SDK peer (`lab-node peer`) in `ns`, logged in as `user`
    /// over `wss://` trusting `ca`, with `extra` flags (e.g. `--call bob`);
    /// returned once it is ready.
    pub fn peer(&self, ns: &str, user: &str, ca: &str, extra: &[&str]) -> Node {
        let url = self.wss_url();
        let mut args = vec![
            lab_node(),
            "peer",
            "--url",
            &url,
            "--ca",
            ca,
            "--user",
            user,
        ];
        args.extend_from_slice(extra);
        let node = self.spawn(ns, user, &args);
        node.wait_for(Duration::from_secs(30), |v| v["type"] == "ready");
        node
    }

    /// The server's WebSocket URL.
    pub fn wss_url(&self) -> String {
        format!("wss://{PUBLIC_IP}:{SERVER_PORT}/ws")
    }

    /// Caps what `dev` in `ns` sends at `kbit` kbit/s with a token bucket
    /// (`tc qdisc replace … root tbf`): a burst of 8 KB, and up to 200 ms
    /// of queue before it drops, like a slow uplink. Replaces any earlier
    /// cap. The kernel here has no netem; tbf and nftables stand in for it.
    pub fn limit_rate(&self, ns: &str, dev: &str, kbit: u32) {
        let rate = format!("{kbit}kbit");
        self.exec(
            ns,
            &[
                "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", "8kb",
                "latency", "200ms",
            ],
        );
    }

    /// Removes the cap [`limit_rate`](Self::limit_rate) set.
    pub fn clear_rate_limit(&self, ns: &str, dev: &str) {
        self.exec(ns, &["tc", "qdisc", "del", "dev", dev, "root"]);
    }

    /// Drops `percent` % of the UDP packets `ns` sends, at random
    /// (nftables `numgen random`, in a table of its own on the output
    /// hook), in place of netem's loss. TCP (signaling) is spared.
    /// Replaces any earlier loss rule.
    pub fn drop_udp(&self, ns: &str, percent: u32) {
        let _ = quiet(&[
            "ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "lab_loss",
        ]);
        let rules = format!(
            "table inet lab_loss {{\n\
               chain output {{ type filter hook output priority filter; policy accept;\n\
                 meta l4proto udp numgen random mod 100 < {percent} drop\n\
               }}\n\
             }}\n"
        );
        run_with_input(&["ip", "netns", "exec", ns, "nft", "-f", "-"], Some(&rules));
    }

    /// Removes the loss [`drop_udp`](Self::drop_udp) set.
    pub fn clear_udp_loss(&self, ns: &str) {
        self.exec(ns, &["nft", "delete", "table", "inet", "lab_loss"]);
    }

    /// The UDP flows conntrack holds in `router`, one line each.
    pub fn conntrack_udp(&self, router: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", router, "conntrack", "-L", "-p", "udp"])
            .output()
            .unwrap_or_else(|e| panic!("conntrack: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let children = std::mem::take(self.children.get_mut().unwrap_or_else(|e| e.into_inner()));
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // `ip netns exec` children may have left grandchildren (Chromium).
        for ns in self.namespaces.iter().rev() {
            delete_namespace(ns);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The lines of `reader`, invalid UTF-8 replaced (coturn prints some).
fn lossy_lines(reader: impl std::io::Read) -> impl Iterator<Item = String> {
    let mut reader = BufReader::new(reader);
    std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(String::from_utf8_lossy(&buf).trim_end().to_string()),
        }
    })
}

/// The lab's certificates.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA (PEM) peers trust.
    pub ca: PathBuf,
    /// The server's certificate (PEM) for [`PUBLIC_IP`].
    pub cert: PathBuf,
    /// The server's key (PEM).
    pub key: PathBuf,
    /// base64 of the SHA-256 of the server key's SubjectPublicKeyInfo, as
    /// Chromium's `--ignore-certificate-errors-spki-list` takes it.
    pub spki_sha256: String,
}

/// The path of the `lab-node` binary: set by the test (Cargo's
/// `CARGO_BIN_EXE_lab-node`) through [`set_lab_node`].
pub fn lab_node() -> &'static str {
    LAB_NODE
        .get()
        .map(String::as_str)
        .unwrap_or_else(|| panic!("calling_netlab::set_lab_node was not called"))
}

static LAB_NODE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Tells the lab where `lab-node` is (call once, before [`Lab::new`]).
pub fn set_lab_node(path: &str) {
    let _ = LAB_NODE.set(path.to_string());
}

/// A process in the lab, its stdout read as JSON lines.
pub struct Node {
    name: String,
    stdin: Mutex<Option<ChildStdin>>,
    lines: Arc<Mutex<Vec<Value>>>,
    log: Arc<Mutex<String>>,
}

impl Node {
    /// Every line printed so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stdout lines and stderr, for failure messages.
    pub fn text(&self) -> String {
        let mut out = format!("--- {} stdout\n", self.name);
        let lines = self.lines();
        // Periodic lines only matter at the end: keep the last few.
        let periodic = |l: &Value| {
            l["type"] == "stats"
                || l["event"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("UserVoiceVolume"))
        };
        let skip = lines
            .iter()
            .filter(|l| periodic(l))
            .count()
            .saturating_sub(3);
        let mut skipped = 0;
        for l in lines {
            if periodic(&l) && skipped < skip {
                skipped += 1;
                continue;
            }
            match l["type"].as_str() {
                Some("text") => out.push_str(l["text"].as_str().unwrap_or("")),
                _ => out.push_str(&l.to_string()),
            }
            out.push('\n');
        }
        out.push_str(&format!("--- {} stderr\n", self.name));
        out.push_str(&self.log.lock().unwrap_or_else(|e| e.into_inner()));
        out
    }

    /// Waits (bounded) for the first line matching `pred`; panics with the
    /// node's output when none comes.
    pub fn wait_for(&self, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.try_wait_for(within, pred).unwrap_or_else(|| {
            panic!(
                "{}: no expected line within {within:?}\n{}",
                self.name,
                self.text()
            )
        })
    }

    /// Waits (bounded) for the first line matching `pred`.
    pub fn try_wait_for(&self, within: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = self.lines().into_iter().find(|v| pred(v)) {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a stdout line (raw text, e.g. coturn's log) has all `parts`.
    pub fn has_text(&self, parts: &[&str]) -> bool {
        self.lines().iter().any(|v| {
            let line = v["text"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            parts.iter().all(|p| line.contains(p))
        })
    }

    /// Writes a command line to the node's stdin.
    pub fn send(&self, line: &str) {
        if let Some(stdin) = self
            .stdin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let _ = writeln!(stdin, "{line}");
        }
    }

    /// Closes the node's stdin: lab nodes log out and exit.
    pub fn close(&self) {
        self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
