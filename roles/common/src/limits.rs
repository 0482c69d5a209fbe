//! What strangers may hold open on a listener: connections in total and per
//! source address ([`peer_key`]). A connection over either bound is closed
//! at once; refusals are logged at most once per [`WARN_EVERY`], with how
//! many there were.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// At most one log line about refused connections this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The address a peer is counted by: an IPv4 address (also one mapped into
/// IPv6, as a dual-stack listener gives it) as is, an IPv6 address by its
/// /64. A /64 is one network, as the hosts behind an IPv4 address are, and
/// any host on it may take any of its addresses.
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(network.into())
        }
        v4 => v4,
    }
}

/// A peer's address as it is counted (see [`peer_key`]), for logs: an IPv6
/// peer as its /64.
pub fn counted_as(ip: IpAddr) -> String {
    match peer_key(ip) {
        IpAddr::V6(network) => format!("{network}/64"),
        v4 => v4.to_string(),
    }
}

/// A count per peer address, by its [`peer_key`] (the connections, the
/// channels or the custom jobs of one address); an address counting
/// nothing is forgotten.
#[derive(Debug, Default)]
pub struct AddressCounts(HashMap<IpAddr, usize>);

impl AddressCounts {
    pub fn count(&self, ip: IpAddr) -> usize {
        self.0.get(&peer_key(ip)).copied().unwrap_or(0)
    }

    pub fn add(&mut self, ip: IpAddr, n: usize) {
        *self.0.entry(peer_key(ip)).or_default() += n;
    }

    pub fn remove(&mut self, ip: IpAddr, n: usize) {
        let key = peer_key(ip);
        if let Some(count) = self.0.get_mut(&key) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.0.remove(&key);
            }
        }
    }
}

/// Bounds on a listener's open connections.
#[derive(Clone)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    total: usize,
    /// Connections open from each address.
    per_address: AddressCounts,
    refused_unreported: u64,
    last_warned: Option<Instant>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_total` connections are open.
    Total(usize),
    /// The source address (an IPv6 /64) has `max_per_ip` connections open.
    PerIp(usize),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Total(n) => write!(f, "{n} connections open, the most allowed"),
            Refusal::PerIp(n) => write!(
                f,
                "{n} connections open from this address, the most allowed"
            ),
        }
    }
}

/// One admitted connection; it counts until dropped.
pub struct ConnectionPermit {
    ip: IpAddr,
    state: Arc<Mutex<State>>,
}

impl ConnectionLimits {
    /// Bounds of at least one connection each.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            state: Arc::default(),
        }
    }

    /// Counts a new connection from `ip` in (by its [`peer_key`]), unless
    /// a bound is reached.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let mut state = self.lock();
        let refusal = if state.total >= self.max_total {
            Some(Refusal::Total(self.max_total))
        } else if state.per_address.count(ip) >= self.max_per_ip {
            Some(Refusal::PerIp(self.max_per_ip))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            state.refused_unreported += 1;
            return Err(refusal);
        }
        state.total += 1;
        state.per_address.add(ip, 1);
        Ok(ConnectionPermit {
            ip,
            state: self.state.clone(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Refusals since the last report, if one is due at `now` (then reset).
    pub fn refusals_to_report(&self, now: Instant) -> Option<u64> {
        let mut state = self.lock();
        let due = state
            .last_warned
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
        if !due || state.refused_unreported == 0 {
            return None;
        }
        state.last_warned = Some(now);
        Some(std::mem::take(&mut state.refused_unreported))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::lock(&self.state)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut state = crate::lock(&self.state);
        state.total -= 1;
        state.per_address.remove(self.ip, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn bounds_per_address_and_in_total_free_up_as_connections_close() {
        let limits = ConnectionLimits::new(3, 2);
        let a1 = limits.admit(ip(1)).unwrap();
        let _a2 = limits.admit(ip(1)).unwrap();
        assert_eq!(limits.admit(ip(1)).err(), Some(Refusal::PerIp(2)));
        let _b1 = limits.admit(ip(2)).unwrap();
        assert_eq!(limits.admit(ip(3)).err(), Some(Refusal::Total(3)));
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        assert!(limits.admit(ip(1)).is_ok());
    }

    #[test]
    fn an_ipv6_network_counts_as_one_address_and_mapped_ipv4_as_itself() {
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            peer_key(v6("2001:db8:1:2:aaaa::1")),
            peer_key(v6("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            peer_key(v6("2001:db8:1:2::1")),
            peer_key(v6("2001:db8:1:3::1"))
        );
        assert_eq!(peer_key(v6("::ffff:10.0.0.1")), ip(1));
        assert_eq!(peer_key(ip(1)), ip(1));
        let limits = ConnectionLimits::new(10, 1);
        let _held = limits.admit(v6("2001:db8::1")).unwrap();
        assert!(limits.admit(v6("2001:db8::2")).is_err());
        let _mapped = limits.admit(v6("::ffff:10.0.0.1")).unwrap();
        assert!(limits.admit(ip(1)).is_err());
    }

    #[test]
    fn refusals_are_reported_at_most_once_per_period() {
        let limits = ConnectionLimits::new(1, 1);
        let now = Instant::now();
        assert_eq!(limits.refusals_to_report(now), None);
        let _held = limits.admit(ip(1)).unwrap();
        for _ in 0..5 {
            assert!(limits.admit(ip(1)).is_err());
        }
        assert_eq!(limits.refusals_to_report(now), Some(5));
        assert!(limits.admit(ip(1)).is_err());
        assert_eq!(limits.refusals_to_report(now + WARN_EVERY / 2), None);
        assert_eq!(limits.refusals_to_report(now + WARN_EVERY), Some(1));
    }
}
