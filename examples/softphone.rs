//! `softphone`: a terminal client for a running `calling-server`.
//!
//! ```sh
//! cargo run -p calling-server -- --demo --demo-user alice --demo-user bob
//! cargo run -p calling-examples --bin softphone -- \
//!     --url ws://127.0.0.1:8080/ws --sdk-app-id <id> --user alice --user-sig <sig>
//! ```
//!
//! Instead of `--user-sig`, `--secret-key` (or `CALLING_SECRET_KEY`) makes the
//! UserSig locally, for development. `--record DIR` writes what every remote
//! user sends into `DIR/<user>.ogg` and `DIR/<user>.h264`;
//! `--record-decoded DIR` decodes it into `DIR/<user>.y4m` (I420 video any
//! player opens) and `DIR/<user>.wav`.
//!
//! Built with `--features devices`, it is a real softphone: `--mic [NAME]`
//! captures a microphone, `--speaker [NAME]` (and `--earpiece NAME`, for
//! `handsfree off`) plays the other users, and `--list-devices` lists what
//! the sound system offers. `default` names the system's default device.
//!
//! Commands, one per line on stdin (`help` lists them): `call bob video`,
//! `group bob,carol audio`, `accept`, `reject`, `ignore`, `hangup`,
//! `invite dave`, `join <call-id> <ticket>`, `ticket`, `mute`, `unmute`, `camera on|off`,
//! `audio` / `video` (switch the call), `allow` / `refuse` (answer a switch
//! request), `handsfree on|off`, `quality 480|720|1080`, `status`, `stats`,
//! `quit`. Events are printed as they come, one per line, starting with
//! `event`. `quit` or the end of stdin hangs up, logs out and exits 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use calling::{
    CallEvent, Calling, CallingConfig, DecodedRecorder, Event, InviteId, MediaType, RecorderSink,
    VideoInput, VideoQuality,
};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};

#[path = "support/logging.rs"]
mod logging;

/// A terminal softphone for a `calling-server`.
#[derive(Debug, Parser)]
#[command(name = "softphone")]
struct Args {
    /// The server's WebSocket URL.
    #[arg(long, env = "CALLING_URL", default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// The application id the server was started with.
    #[arg(long, env = "CALLING_SDK_APP_ID")]
    sdk_app_id: u64,
    /// Who to log in as.
    #[arg(long, env = "CALLING_USER")]
    user: String,
    /// The UserSig for `--user`.
    #[arg(
        long,
        env = "CALLING_USER_SIG",
        hide_env_values = true,
        required_unless_present = "secret_key"
    )]
    user_sig: Option<String>,
    /// Make the UserSig locally from the server's secret key (development only).
    #[arg(
        long,
        env = "CALLING_SECRET_KEY",
        hide_env_values = true,
        conflicts_with = "user_sig"
    )]
    secret_key: Option<String>,
    /// Record remote media into this directory (created if missing).
    #[arg(long)]
    record: Option<PathBuf>,
    /// Ringing time of outgoing calls and invites, in seconds (0: no limit).
    #[arg(long, default_value_t = 30)]
    ring_secs: u64,
    /// Local UDP address media binds, repeatable (default: every interface
    /// (IPv4 and IPv6); `127.0.0.1:0` keeps media on this host).
    #[arg(long = "udp-addr")]
    udp_addrs: Vec<std::net::SocketAddr>,
    /// PEM file of a CA to trust for a `wss://` server besides the system
    /// roots (a private deployment's own CA).
    #[arg(long, env = "CALLING_EXTRA_CA")]
    extra_ca: Option<PathBuf>,
    /// Decode remote media into this directory (created if missing):
    /// `<user>.y4m` and `<user>.wav`.
    #[arg(long)]
    record_decoded: Option<PathBuf>,
    /// Capture this microphone (`default`: the system's); needs the
    /// `devices` feature. Without it, calls send a 440 Hz tone.
    #[arg(long)]
    mic: Option<String>,
    /// Play the other users on this device (`default`: the system's);
    /// needs the `devices` feature.
    #[arg(long)]
    speaker: Option<String>,
    /// With `--speaker`: the device for `handsfree off` (a headset).
    #[arg(long, requires = "speaker")]
    earpiece: Option<String>,
    /// List the audio devices and exit (needs the `devices` feature).
    #[arg(long)]
    list_devices: bool,
}

/// What the keyboard may answer.
#[derive(Default)]
struct Pending {
    invite: Option<InviteId>,
    switch_request: Option<u32>,
}

#[tokio::main]
async fn main() -> ExitCode {
    logging::init();
    let args = Args::parse();
    if args.list_devices {
        return match list_devices() {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("softphone: {why}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("softphone: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let sig = match (&args.user_sig, &args.secret_key) {
        (Some(sig), _) => sig.clone(),
        (None, Some(key)) => calling_usersig::generate(
            args.sdk_app_id,
            key,
            &args.user,
            86_400,
            calling_usersig::now_unix(),
        ),
        (None, None) => return Err("give --user-sig or --secret-key".into()),
    };
    let recorder = match &args.record {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            Some(Arc::new(RecorderSink::new(dir.clone())))
        }
        None => None,
    };
    let decoded = match &args.record_decoded {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            Some(Arc::new(DecodedRecorder::new(dir.clone())))
        }
        None => None,
    };
    let mut config = CallingConfig::default();
    choose_devices(&args, &mut config)?;
    if !args.udp_addrs.is_empty() {
        config.media.udp_addrs = args.udp_addrs.clone();
    }
    if let Some(path) = &args.extra_ca {
        config.extra_ca_pem = Some(
            calling::read_ca_file(path)
                .map_err(|e| format!("cannot read --extra-ca {}: {e}", path.display()))?,
        );
    }
    let (phone, mut events) = Calling::login(calling::Login {
        server: args.url.to_string(),
        sdk_app_id: args.sdk_app_id,
        user_id: args.user.to_string(),
        user_sig: sig,
        config,
    })
    .await
    .map_err(|e| format!("login failed: {e}"))?;
    if let Some(rec) = &recorder {
        phone
            .set_frame_sink(Some(rec.clone()))
            .await
            .map_err(|e| e.to_string())?;
    }
    if let Some(rec) = &decoded {
        phone
            .set_decoded_sink(Some(rec.clone()))
            .await
            .map_err(|e| e.to_string())?;
    }
    println!("ready {} (type help)", args.user);
    let ring = Duration::from_secs(args.ring_secs);
    let mut pending = Pending::default();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    if !command(&phone, &mut pending, line.trim(), ring).await {
                        break;
                    }
                }
                // End of input, or unreadable input: leave cleanly.
                Ok(None) => break,
                Err(e) => {
                    eprintln!("stdin: {e}");
                    break;
                }
            },
            event = events.recv() => match event {
                Some(event) => show(&event, &mut pending),
                None => {
                    println!("logged out");
                    finish(recorder.as_deref(), decoded.as_deref());
                    return Ok(());
                }
            },
        }
    }
    let _ = phone.hangup().await;
    let _ = phone.logout().await;
    // Show what the hangup produced (the call end), until the client stops.
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = events.recv().await {
            show(&event, &mut pending);
        }
    })
    .await;
    if drained.is_err() {
        eprintln!("softphone: the client did not stop in time");
    }
    finish(recorder.as_deref(), decoded.as_deref());
    println!("bye");
    Ok(())
}

fn finish(recorder: Option<&RecorderSink>, decoded: Option<&DecodedRecorder>) {
    if let Some(rec) = recorder
        && let Err(e) = rec.finish()
    {
        eprintln!("recording: {e}");
    }
    if let Some(rec) = decoded
        && let Err(e) = rec.finish()
    {
        eprintln!("decoded recording: {e}");
    }
}

/// `default` names the system's default device.
#[cfg(feature = "devices")]
fn device_name(name: &str) -> Option<String> {
    (name != "default").then(|| name.to_owned())
}

/// Puts `--mic`, `--speaker` and `--earpiece` into the config.
#[cfg(feature = "devices")]
fn choose_devices(args: &Args, config: &mut CallingConfig) -> Result<(), String> {
    if let Some(mic) = &args.mic {
        config.audio = calling::AudioInput::Microphone {
            device: device_name(mic),
        };
    }
    if let Some(speaker) = &args.speaker {
        config.audio_output = calling::AudioOutput::Device {
            speaker: device_name(speaker),
            earpiece: args.earpiece.as_deref().and_then(device_name),
        };
    }
    Ok(())
}

#[cfg(not(feature = "devices"))]
fn choose_devices(args: &Args, _config: &mut CallingConfig) -> Result<(), String> {
    if args.mic.is_some() || args.speaker.is_some() {
        return Err(
            "--mic and --speaker need audio devices: build with `--features devices`".into(),
        );
    }
    Ok(())
}

#[cfg(feature = "devices")]
fn list_devices() -> Result<(), String> {
    use calling::devices;
    for (what, list) in [
        ("input", devices::input_devices()),
        ("output", devices::output_devices()),
    ] {
        let list = list.map_err(|e| format!("cannot list {what} devices: {e}"))?;
        for d in list {
            let mark = if d.is_default { " (default)" } else { "" };
            println!("{what} {}{mark}", d.name);
        }
    }
    Ok(())
}

#[cfg(not(feature = "devices"))]
fn list_devices() -> Result<(), String> {
    Err("--list-devices needs audio devices: build with `--features devices`".into())
}

fn media_type(word: Option<&str>) -> Result<MediaType, String> {
    match word {
        None | Some("video") => Ok(MediaType::Video),
        Some("audio") => Ok(MediaType::Audio),
        Some(other) => Err(format!("not a media type: {other} (audio or video)")),
    }
}

fn user_list(word: Option<&str>) -> Result<Vec<&str>, String> {
    let list: Vec<&str> = word
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if list.is_empty() {
        return Err("name at least one user (comma-separated)".into());
    }
    Ok(list)
}

const HELP: &str = "commands: call <user> [audio|video] | group <u1,u2,..> [audio|video] | \
accept | reject | ignore | hangup | invite <u1,u2,..> | join <call-id> <ticket> | ticket | mute | unmute | \
camera on|off | audio | video | allow | refuse | handsfree on|off | quality 480|720|1080 | \
status | stats | quit";

/// Runs one command line; `false` means quit.
async fn command(phone: &Calling, pending: &mut Pending, line: &str, ring: Duration) -> bool {
    let mut words = line.split_whitespace();
    let Some(verb) = words.next() else {
        return true;
    };
    let arg = words.next();
    let arg2 = words.next();
    let result: Result<String, String> = async {
        let e = |e: calling::CallingError| e.to_string();
        match verb {
            "quit" | "exit" => Err(String::new()),
            "help" => Ok(HELP.into()),
            "call" => {
                let user = arg.ok_or("call whom?")?;
                let kind = media_type(words.next())?;
                let id = phone.call(user, kind, ring).await.map_err(e)?;
                Ok(format!("calling {user}, call {id}"))
            }
            "group" => {
                let users = user_list(arg)?;
                let kind = media_type(words.next())?;
                let id = phone.group_call(&users, kind, ring).await.map_err(e)?;
                Ok(format!("group call {id}"))
            }
            "accept" | "reject" | "ignore" => {
                let invite = pending.invite.take().ok_or("no invite is ringing")?;
                match verb {
                    "accept" => phone.accept(&invite).await,
                    "reject" => phone.reject(&invite).await,
                    _ => phone.ignore(&invite).await,
                }
                .map_err(e)?;
                Ok(format!("{verb} done"))
            }
            "hangup" => {
                pending.invite = None;
                phone.hangup().await.map_err(e)?;
                Ok("hung up".into())
            }
            "invite" => {
                let users = user_list(arg)?;
                phone.invite(&users, ring).await.map_err(e)?;
                Ok(format!("invited {}", users.join(",")))
            }
            "join" => {
                let (Some(id), Some(ticket)) = (arg, arg2) else {
                    return Err("join <call-id> <ticket>".into());
                };
                phone.join(id, ticket).await.map_err(e)?;
                Ok(format!("joining {id}"))
            }
            "ticket" => {
                let call = phone.current_call().await.map_err(e)?;
                match call.and_then(|c| c.join_ticket.map(|t| (c.call_id, t))) {
                    Some((id, ticket)) => Ok(format!("join {id} {ticket}")),
                    None => Err("no call to hand a ticket out for".into()),
                }
            }
            "mute" | "unmute" => {
                phone.set_mic_mute(verb == "mute").await.map_err(e)?;
                Ok(format!("{verb}d"))
            }
            "camera" => match arg {
                Some("on") => {
                    phone
                        .open_camera(VideoInput::TestPattern)
                        .await
                        .map_err(e)?;
                    Ok("camera on".into())
                }
                Some("off") => {
                    phone.close_camera().await.map_err(e)?;
                    Ok("camera off".into())
                }
                _ => Err("camera on|off".into()),
            },
            "audio" | "video" => {
                let to = media_type(Some(verb))?;
                phone.switch_media_type(to).await.map_err(e)?;
                Ok(match to {
                    MediaType::Audio => "switched to audio".into(),
                    _ => "asked to switch to video".into(),
                })
            }
            "allow" | "refuse" => {
                let id = pending
                    .switch_request
                    .take()
                    .ok_or("no switch request is waiting")?;
                phone
                    .answer_media_switch(id, verb == "allow")
                    .await
                    .map_err(e)?;
                Ok(format!("{verb} the switch: done"))
            }
            "handsfree" => {
                let on = match arg {
                    Some("on") => true,
                    Some("off") => false,
                    _ => return Err("handsfree on|off".into()),
                };
                phone.set_hands_free(on).await.map_err(e)?;
                Ok(format!("hands-free {}", if on { "on" } else { "off" }))
            }
            "quality" => {
                let q = match arg {
                    Some("480") => VideoQuality::P480,
                    Some("720") => VideoQuality::P720,
                    Some("1080") => VideoQuality::P1080,
                    _ => return Err("quality 480|720|1080".into()),
                };
                phone.set_video_quality(q).await.map_err(e)?;
                Ok(format!("quality {q:?}"))
            }
            "status" => Ok(match phone.current_call().await.map_err(e)? {
                None => "idle".into(),
                Some(s) => format!(
                    "call {} {:?} {:?} group={} connected=[{}] ringing=[{}]",
                    s.call_id,
                    s.state,
                    s.media_type,
                    s.is_group,
                    join(&s.connected),
                    join(&s.ringing)
                ),
            }),
            "stats" => {
                let stats = phone.stats().await.map_err(e)?;
                if stats.is_empty() {
                    return Ok("no media".into());
                }
                Ok(stats
                    .iter()
                    .map(|s| {
                        format!(
                            "{}: audio {} video {} frames received, {} bytes",
                            s.user,
                            s.audio_frames_received,
                            s.video_frames_received,
                            s.bytes_received
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
            other => Err(format!("unknown command {other:?}; type help")),
        }
    }
    .await;
    match result {
        Ok(text) => println!("ok {text}"),
        Err(text) if text.is_empty() => return false,
        Err(text) => println!("error {text}"),
    }
    true
}

fn join(users: &[calling::UserId]) -> String {
    users
        .iter()
        .map(|u| u.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Prints one event as one line, and remembers what can be answered.
fn show(event: &Event, pending: &mut Pending) {
    let line = match event {
        Event::Call(CallEvent::Invited {
            call_id,
            invite_id,
            inviter,
            sponsor,
            other_invitees,
            members,
            is_from_group,
            media_type,
            ..
        }) => {
            pending.invite = Some(invite_id.clone());
            format!(
                "invited call={call_id} by={inviter} sponsor={sponsor} media={media_type:?} \
                 group={is_from_group} others=[{}] members=[{}] (accept / reject)",
                join(other_invitees),
                join(members)
            )
        }
        Event::Call(CallEvent::MediaTypeSwitchRequested {
            user,
            request_id,
            to,
            ..
        }) => {
            pending.switch_request = Some(*request_id);
            format!("switch-requested by={user} to={to:?} (allow / refuse)")
        }
        Event::Call(CallEvent::CallingCancel { user, .. }) => {
            pending.invite = None;
            format!("cancelled by={user}")
        }
        Event::Call(CallEvent::CallingTimeout { .. }) => {
            pending.invite = None;
            "ringing-timeout".into()
        }
        Event::Call(CallEvent::Rejected { user, .. }) => format!("rejected user={user}"),
        Event::Call(CallEvent::NoResponse { users, reason, .. }) => {
            format!("no-response users=[{}] reason={reason:?}", join(users))
        }
        Event::Call(CallEvent::LineBusy { user, .. }) => format!("line-busy user={user}"),
        Event::Call(CallEvent::UserEnter { user, call_id }) => {
            format!("user-enter user={user} call={call_id}")
        }
        Event::Call(CallEvent::UserLeave { user, .. }) => format!("user-leave user={user}"),
        Event::Call(CallEvent::CallEnd {
            reason, duration, ..
        }) => {
            pending.invite = None;
            pending.switch_request = None;
            format!(
                "call-end reason={reason:?} duration={:.1}s",
                duration.as_secs_f64()
            )
        }
        Event::Call(CallEvent::UserAudioAvailable {
            user, available, ..
        }) => format!("audio-available user={user} {available}"),
        Event::Call(CallEvent::UserVideoAvailable {
            user, available, ..
        }) => format!("video-available user={user} {available}"),
        Event::Call(CallEvent::MediaTypeChanged { user, from, to, .. }) => {
            format!("media-type-changed by={user} from={from:?} to={to:?}")
        }
        Event::Call(CallEvent::MediaTypeSwitchRefused { users, .. }) => {
            format!("switch-refused users=[{}]", join(users))
        }
        Event::Call(CallEvent::InviteeListUpdated { invitees, .. }) => {
            format!("invitees [{}]", join(invitees))
        }
        Event::Call(CallEvent::GlareResolved { call_id, .. }) => {
            format!("glare-resolved call={call_id}")
        }
        // Many per second: not printed.
        Event::UserVoiceVolume { .. } => return,
        Event::KickedOut => "kicked-out".into(),
        Event::LoginExpired => "login-expired".into(),
        Event::Disconnected => "disconnected".into(),
        Event::Reconnected => "reconnected".into(),
        Event::Error { code, message } => format!("error code={code} {message}"),
        other => format!("{other:?}"),
    };
    println!("event {line}");
}
