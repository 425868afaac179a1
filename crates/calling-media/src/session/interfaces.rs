//! Which of the configured bind addresses a peer connection gets.
//!
//! webrtc-rs expands a wildcard (`0.0.0.0`, `[::]`) into one address per
//! usable interface of its family, again at each ICE restart. When the host
//! has no usable interface of that family, it binds the wildcard itself and
//! announces it as a host candidate (`0.0.0.0` or `::`), an address no peer
//! can use and that the peer's stack would send to itself; a host without
//! IPv6 would also log a bind error per connection. Such a wildcard is left
//! out here, so the default (every IPv4 and IPv6 interface plus loopback)
//! is quiet and clean on every host.

use std::net::{IpAddr, SocketAddr};

use rtc::shared::ifaces::ifaces;

/// `configured` without the wildcards of a family the host has no usable
/// interface of, as far as the host can tell; never empty when
/// `configured` is not (if nothing would be left, everything is kept).
pub(super) fn bind_addrs(configured: &[SocketAddr]) -> Vec<SocketAddr> {
    let Ok(interfaces) = ifaces() else {
        // Nothing to judge by: webrtc-rs decides as it would.
        return configured.to_vec();
    };
    let usable: Vec<IpAddr> = interfaces
        .iter()
        .filter_map(|i| i.addr.map(|a| a.ip()))
        .filter(|ip| usable_ip(*ip))
        .collect();
    filter(configured, &usable)
}

fn filter(configured: &[SocketAddr], usable: &[IpAddr]) -> Vec<SocketAddr> {
    let kept: Vec<SocketAddr> = configured
        .iter()
        .copied()
        .filter(|a| !a.ip().is_unspecified() || usable.iter().any(|ip| ip.is_ipv4() == a.is_ipv4()))
        .collect();
    if kept.is_empty() {
        configured.to_vec()
    } else {
        kept
    }
}

/// What webrtc-rs counts as an interface a wildcard expands into: not
/// loopback, unspecified or link-local.
fn usable_ip(ip: IpAddr) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    !ip.is_loopback() && !ip.is_unspecified() && !link_local
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_wildcard_without_an_interface_of_its_family_is_left_out() {
        let default = addrs(&["0.0.0.0:0", "[::]:0", "127.0.0.1:0"]);
        // IPv4 only (a home router's LAN, a container).
        assert_eq!(
            filter(&default, &ips(&["192.0.2.10"])),
            addrs(&["0.0.0.0:0", "127.0.0.1:0"])
        );
        // Both families.
        assert_eq!(filter(&default, &ips(&["192.0.2.10", "fd00::2"])), default);
        // Loopback only: the loopback address is what is left.
        assert_eq!(filter(&default, &[]), addrs(&["127.0.0.1:0"]));
    }

    #[test]
    fn explicit_addresses_are_kept_and_the_list_is_never_emptied() {
        let explicit = addrs(&["192.0.2.10:0", "[fd00::2]:5000"]);
        assert_eq!(filter(&explicit, &[]), explicit);
        let wildcards = addrs(&["0.0.0.0:0", "[::]:0"]);
        assert_eq!(filter(&wildcards, &[]), wildcards);
    }

    #[test]
    fn loopback_and_link_local_do_not_count_as_interfaces() {
        for ip in ["127.0.0.1", "::1", "169.254.1.2", "fe80::1", "0.0.0.0"] {
            assert!(!usable_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["192.0.2.1", "203.0.113.9", "fd00::2", "2001:db8::1"] {
            assert!(usable_ip(ip.parse().unwrap()), "{ip}");
        }
    }
}
