//! `usersig`: generate and verify TLS-Sig-API v2 UserSigs from the shell.

use std::io::Read as _;
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use calling_usersig::{
    Claims, DEFAULT_EXPIRE_SECS, MAX_SIG_LEN, PrivateMapKey, Privileges, Room, generate,
    generate_private_map_key, generate_with_userbuf, now_unix, verify, verify_with_userbuf,
};
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use serde::Serialize;
use serde_json::{Value, json};

/// Generate and verify TLS-Sig-API v2 UserSigs (compatible with the official
/// tls-sig-api-v2 libraries).
///
/// The secret key may be given with --key or, to keep it out of shell
/// history, in the CALLING_SECRET_KEY environment variable (the one
/// calling-server and the softphone read; USERSIG_KEY, its old name, still
/// works for now but is deprecated). CALLING_SDK_APP_ID may give the app id.
#[derive(Parser)]
#[command(name = "usersig", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a new UserSig, alone on one line.
    Gen {
        #[command(flatten)]
        common: Common,
        /// Lifetime in seconds (default 180 days).
        #[arg(long, default_value_t = DEFAULT_EXPIRE_SECS)]
        expire: u64,
        /// Text to carry, signed, in the userbuf.
        #[arg(long)]
        userbuf: Option<String>,
        /// Issue time in unix seconds (default: the system clock).
        #[arg(long)]
        now: Option<u64>,
    },
    /// Print a PrivateMapKey (a UserSig granting rights in one room).
    Privmap {
        #[command(flatten)]
        common: Common,
        /// Numeric room id.
        #[arg(
            long,
            conflicts_with = "room_name",
            required_unless_present = "room_name"
        )]
        room_id: Option<u32>,
        /// String room id.
        #[arg(long)]
        room_name: Option<String>,
        /// Privilege bits: 1 create, 2 enter, 4/8 send/receive audio,
        /// 16/32 send/receive video, 64/128 send/receive screen share.
        #[arg(long, default_value_t = 255)]
        privileges: u32,
        /// Lifetime in seconds (default 180 days).
        #[arg(long, default_value_t = DEFAULT_EXPIRE_SECS)]
        expire: u64,
        /// Issue time in unix seconds (default: the system clock).
        #[arg(long)]
        now: Option<u64>,
    },
    /// Verify a UserSig and print one line of JSON. Exit status: 0 valid,
    /// 1 invalid, 2 usage error.
    Verify {
        #[command(flatten)]
        common: Common,
        /// Verification time in unix seconds (default: the system clock).
        #[arg(long)]
        now: Option<u64>,
        /// Require exactly this userbuf text.
        #[arg(long)]
        userbuf: Option<String>,
        /// The UserSig; "-" reads it from standard input.
        #[arg(allow_hyphen_values = true)]
        sig: String,
    },
}

#[derive(Args)]
struct Common {
    /// Application id (SDKAppID).
    #[arg(long, env = "CALLING_SDK_APP_ID")]
    sdk_app_id: u64,
    /// Secret key shared with the verifier (USERSIG_KEY, deprecated, is
    /// still read when neither this nor CALLING_SECRET_KEY is given).
    #[arg(long, env = "CALLING_SECRET_KEY", hide_env_values = true)]
    key: Option<String>,
    /// User id the ticket is for.
    #[arg(long)]
    user: String,
}

/// The environment variable the key was read from before it was named like
/// calling-server's.
const DEPRECATED_KEY_VAR: &str = "USERSIG_KEY";

impl Common {
    /// The secret key: `--key` or `CALLING_SECRET_KEY`, else the deprecated
    /// `USERSIG_KEY` (with a warning on stderr). Without any of them this is
    /// the usage error (exit status 2) clap gives for a missing flag.
    fn key(&self) -> String {
        if let Some(key) = &self.key {
            return key.clone();
        }
        match std::env::var(DEPRECATED_KEY_VAR) {
            Ok(key) if !key.is_empty() => {
                eprintln!(
                    "usersig: warning: {DEPRECATED_KEY_VAR} is deprecated and will be removed; \
                     set CALLING_SECRET_KEY instead"
                );
                key
            }
            _ => Cli::command()
                .error(
                    ErrorKind::MissingRequiredArgument,
                    "the secret key is required: give --key <KEY> or set CALLING_SECRET_KEY",
                )
                .exit(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Gen {
            common,
            expire,
            userbuf,
            now,
        } => {
            let key = common.key();
            let now = now.unwrap_or_else(now_unix);
            let sig = match userbuf {
                Some(buf) => generate_with_userbuf(
                    common.sdk_app_id,
                    &key,
                    &common.user,
                    expire,
                    buf.as_bytes(),
                    now,
                ),
                None => generate(common.sdk_app_id, &key, &common.user, expire, now),
            };
            println!("{sig}");
            ExitCode::SUCCESS
        }
        Command::Privmap {
            common,
            room_id,
            room_name,
            privileges,
            expire,
            now,
        } => {
            let key = common.key();
            let room = match (room_name, room_id) {
                (Some(name), _) => Room::Name(name),
                (None, Some(id)) => Room::Id(id),
                (None, None) => {
                    eprintln!("usersig: --room-id or --room-name is required");
                    return ExitCode::from(2);
                }
            };
            match generate_private_map_key(
                common.sdk_app_id,
                &key,
                &common.user,
                expire,
                &room,
                Privileges::from_bits(privileges),
                now.unwrap_or_else(now_unix),
            ) {
                Ok(sig) => {
                    println!("{sig}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("usersig: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Verify {
            common,
            now,
            userbuf,
            sig,
        } => {
            let key = common.key();
            let sig = if sig == "-" {
                let mut s = String::new();
                // One byte over the limit is enough for verify to report `too_long`.
                let limit = u64::try_from(MAX_SIG_LEN + 1).unwrap_or(u64::MAX);
                if let Err(e) = std::io::stdin().take(limit).read_to_string(&mut s) {
                    eprintln!("usersig: cannot read the UserSig from standard input: {e}");
                    return ExitCode::from(2);
                }
                s
            } else {
                sig
            };
            let sig = sig.trim();
            let now = now.unwrap_or_else(now_unix);
            let result = match &userbuf {
                Some(buf) => verify_with_userbuf(
                    common.sdk_app_id,
                    &key,
                    &common.user,
                    sig,
                    buf.as_bytes(),
                    now,
                ),
                None => verify(common.sdk_app_id, &key, &common.user, sig, now),
            };
            match result {
                Ok(claims) => {
                    println!("{}", valid_json(&claims));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let out = InvalidOut {
                        valid: false,
                        error: e.kind(),
                        message: e.to_string(),
                    };
                    println!("{}", to_line(&out));
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// `verify` output on success; fields in this order, `valid` first.
#[derive(Serialize)]
struct ValidOut<'a> {
    valid: bool,
    identifier: &'a str,
    sdk_app_id: u64,
    issued_at: u64,
    expire_secs: u64,
    expires_at: u64,
    /// Standard base64 of the userbuf, or null.
    userbuf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    userbuf_text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_map_key: Option<Value>,
}

/// `verify` output on failure.
#[derive(Serialize)]
struct InvalidOut<'a> {
    valid: bool,
    error: &'a str,
    message: String,
}

fn valid_json(claims: &Claims) -> String {
    let buf = claims.userbuf.as_deref();
    let private_map_key = buf
        .and_then(|b| PrivateMapKey::from_userbuf(b).ok())
        .map(|key| {
            let room = match key.room() {
                Room::Id(id) => json!(id),
                Room::Name(name) => json!(name),
            };
            json!({
                "user_id": key.user_id,
                "sdk_app_id": key.sdk_app_id,
                "room": room,
                "expires_at": key.expires_at,
                "privileges": key.privileges.bits(),
                "account_type": key.account_type,
            })
        });
    let out = ValidOut {
        valid: true,
        identifier: &claims.identifier,
        sdk_app_id: claims.sdk_app_id,
        issued_at: claims.issued_at,
        expire_secs: claims.expire_secs,
        expires_at: claims.expires_at(),
        userbuf: buf.map(|b| STANDARD.encode(b)),
        // Only when it reads as text: binary userbufs (PrivateMapKeys) are
        // often valid UTF-8 full of control characters.
        userbuf_text: buf
            .and_then(|b| std::str::from_utf8(b).ok())
            .filter(|t| !t.chars().any(char::is_control)),
        private_map_key,
    };
    to_line(&out)
}

fn to_line<T: Serialize>(value: &T) -> String {
    // Plain structs of strings and numbers always serialise.
    serde_json::to_string(value).unwrap_or_else(|_| {
        r#"{"valid":false,"error":"internal","message":"cannot serialise the result"}"#.to_owned()
    })
}
