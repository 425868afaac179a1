//! `usersig`: generate and verify TLS-Sig-API v2 UserSigs from the shell.

use std::io::Read as _;
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use calling_usersig::{
    Claims, DEFAULT_EXPIRE_SECS, PrivateMapKey, Privileges, Room, generate,
    generate_private_map_key, generate_with_userbuf, now_unix, verify, verify_with_userbuf,
};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

/// Generate and verify TLS-Sig-API v2 UserSigs (compatible with the official
/// tls-sig-api-v2 libraries).
///
/// The secret key may be given with --key or, to keep it out of shell
/// history, in the USERSIG_KEY environment variable.
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
    #[arg(long)]
    sdk_app_id: u64,
    /// Secret key shared with the verifier.
    #[arg(long, env = "USERSIG_KEY", hide_env_values = true)]
    key: String,
    /// User id the ticket is for.
    #[arg(long)]
    user: String,
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
            let now = now.unwrap_or_else(now_unix);
            let sig = match userbuf {
                Some(buf) => generate_with_userbuf(
                    common.sdk_app_id,
                    &common.key,
                    &common.user,
                    expire,
                    buf.as_bytes(),
                    now,
                ),
                None => generate(common.sdk_app_id, &common.key, &common.user, expire, now),
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
                &common.key,
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
            let sig = if sig == "-" {
                let mut s = String::new();
                if let Err(e) = std::io::stdin().read_to_string(&mut s) {
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
                    &common.key,
                    &common.user,
                    sig,
                    buf.as_bytes(),
                    now,
                ),
                None => verify(common.sdk_app_id, &common.key, &common.user, sig, now),
            };
            match result {
                Ok(claims) => {
                    println!("{}", valid_json(&claims));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let out = json!({"valid": false, "error": e.kind(), "message": e.to_string()});
                    println!("{out}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn valid_json(claims: &Claims) -> Value {
    let mut out = json!({
        "valid": true,
        "identifier": claims.identifier,
        "sdk_app_id": claims.sdk_app_id,
        "issued_at": claims.issued_at,
        "expire_secs": claims.expire_secs,
        "expires_at": claims.expires_at(),
        "userbuf": claims.userbuf.as_ref().map(|b| STANDARD.encode(b)),
    });
    if let Some(buf) = &claims.userbuf {
        if let Ok(text) = std::str::from_utf8(buf) {
            out["userbuf_text"] = json!(text);
        }
        if let Ok(key) = PrivateMapKey::from_userbuf(buf) {
            let room = match key.room() {
                Room::Id(id) => json!(id),
                Room::Name(name) => json!(name),
            };
            out["private_map_key"] = json!({
                "user_id": key.user_id,
                "sdk_app_id": key.sdk_app_id,
                "room": room,
                "expires_at": key.expires_at,
                "privileges": key.privileges.bits(),
                "account_type": key.account_type,
            });
        }
    }
    out
}
