//! serde `default = "..."` functions for literal values, so that a config
//! field states its default where it is declared (serde takes a function
//! path, not a value): `#[serde(default = "default::u64::<3600>")]`.
//!
//! Config structs without required fields use `#[serde(default)]` and one
//! `impl Default` instead; serde cannot mix that with required fields.

use std::fmt::Debug;
use std::str::FromStr;

pub fn bool<const V: bool>() -> bool {
    V
}

pub fn u8<const V: u8>() -> u8 {
    V
}

pub fn u32<const V: u32>() -> u32 {
    V
}

pub fn u64<const V: u64>() -> u64 {
    V
}

pub fn usize<const V: usize>() -> usize {
    V
}

/// `0.0.0.0:PORT` (a `String` or a `SocketAddr`): a listener on every interface.
pub fn every_interface<T: FromStr, const PORT: u16>() -> T
where
    T::Err: Debug,
{
    format!("0.0.0.0:{PORT}")
        .parse()
        .expect("an ip:port address")
}

/// `127.0.0.1:PORT` (a `String` or a `SocketAddr`): a listener reached from
/// this machine only, or another role on this machine.
pub fn this_machine<T: FromStr, const PORT: u16>() -> T
where
    T::Err: Debug,
{
    format!("127.0.0.1:{PORT}")
        .parse()
        .expect("an ip:port address")
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    #[test]
    fn addresses_come_as_strings_or_socket_addresses() {
        assert_eq!(super::every_interface::<String, 34254>(), "0.0.0.0:34254");
        let addr: SocketAddr = super::this_machine::<SocketAddr, 3338>();
        assert_eq!(addr, "127.0.0.1:3338".parse().unwrap());
        assert_eq!(super::u64::<{ i64::MAX as u64 }>(), i64::MAX as u64);
    }
}
