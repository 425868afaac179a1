//! A real coturn `turnserver` on 127.0.0.1 for the TURN tests (the one
//! helper of calling-server's tests), and a signaling server that
//! announces it with TURN REST credentials.

#[path = "../../../calling-server/tests/support/coturn.rs"]
mod process;

pub use process::*;

use calling_server::{Config, RunningServer, Server, TurnConfig};

use super::{APP, KEY, Net};

impl Coturn {
    /// coturn with REST API secret `secret`, relaying between peers on
    /// loopback (which coturn refuses by default), logging verbosely.
    pub fn start(secret: &str) -> Coturn {
        Coturn::with_secret(secret, &["--allow-loopback-peers", "--verbose"])
    }
}

/// A signaling server announcing `turn_url` with credentials signed by `secret`.
pub async fn server_with_turn(turn_url: String, secret: &str) -> Net {
    let mut config = Config::new(APP, KEY);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.ice.turn = Some(TurnConfig::new(vec![turn_url], secret));
    let server: RunningServer = Server::bind(config).await.unwrap();
    let url = format!("ws://{}/ws", server.local_addr());
    Net { server, url }
}
