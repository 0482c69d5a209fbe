//! Ports on 127.0.0.1 for a listener that binds later (a child process, or
//! a role that must come back on the same address after a restart).
//!
//! A port handed out by binding port 0 comes from the kernel's ephemeral
//! range, the same range every outgoing connection takes its local port
//! from: between the pick and the bind, any connection of a busy test run
//! may take it ("Address already in use"). These ports come from below that
//! range instead, where only listeners bind, and a counter keeps one
//! process from handing out a port twice.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out: clear of the well-known and registered
/// services that commonly listen below it.
const LOWEST: u16 = 20_000;

/// A port on 127.0.0.1 nobody listens on right now, outside the kernel's
/// ephemeral range.
pub fn free_port() -> Result<u16, String> {
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    let highest = ephemeral_low().saturating_sub(1);
    if highest <= LOWEST {
        return any_port();
    }
    // Processes that pick at the same time start far apart.
    let start = std::process::id().wrapping_mul(7_919);
    match next_bindable(&TAKEN, start, highest) {
        Some(port) => Ok(port),
        None => any_port(),
    }
}

/// The next port from `LOWEST..=highest`, counting on from `start` with
/// `taken`, that binds on 127.0.0.1 now.
fn next_bindable(taken: &AtomicU32, start: u32, highest: u16) -> Option<u16> {
    let span = u32::from(highest - LOWEST) + 1;
    (0..span).find_map(|_| {
        let offset = start.wrapping_add(taken.fetch_add(1, Ordering::Relaxed)) % span;
        let port = LOWEST + offset as u16;
        TcpListener::bind(("127.0.0.1", port))
            .is_ok()
            .then_some(port)
    })
}

/// [`free_port`] as an address.
pub fn free_address() -> SocketAddr {
    let port = free_port().expect("a free port on 127.0.0.1");
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The first port of the kernel's ephemeral range (Linux's default where
/// it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Any free port, from the ephemeral range: the fallback where nothing
/// lies below it.
fn any_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "no port handed out twice");
        let low = ephemeral_low();
        if low > LOWEST + 1 {
            assert!(
                ports.iter().all(|&p| (LOWEST..low).contains(&p)),
                "{ports:?}"
            );
        }
    }

    #[test]
    fn a_port_someone_listens_on_is_skipped() {
        let taken = AtomicU32::new(0);
        let start = u32::from(free_port().unwrap() - LOWEST);
        let port = LOWEST + start as u16;
        let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let next = next_bindable(&taken, start, u16::MAX).unwrap();
        assert!(next > port, "{next} after the busy {port}");
        assert!(
            taken.load(Ordering::Relaxed) >= 2,
            "the busy port was tried"
        );
    }
}
