//! What the connections of one peer address may hold together.

use super::*;

/// The refusal's code on the wire.
const TOO_MANY: &str = "too-many-channels";

fn core_with_channels_per_ip(max: u32) -> PoolCore {
    PoolCore::new(CoreConfig {
        max_channels_per_ip: max,
        ..config()
    })
    .unwrap()
}

/// Opens a channel on `conn`: its id, or the refusal's error code.
fn open(core: &mut PoolCore, conn: ConnId) -> Result<u32, String> {
    let actions = on_message(core, conn, open_extended(&format!("{KEY}.w")));
    match &actions[0] {
        Action::Send(
            _,
            AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(s)),
        ) => Ok(s.channel_id),
        Action::Send(_, AnyMessageOwned::Mining(MiningOwned::OpenMiningChannelError(e))) => {
            Err(String::from_utf8_lossy(e.error_code.as_bytes()).into_owned())
        }
        other => panic!("{other:?}"),
    }
}

/// The channels of every connection of an address count together: another
/// connection gives no more room, another address has its own, and a
/// channel closed (or a connection gone with its channels) gives its place
/// back.
#[test]
fn the_connections_of_one_address_share_its_channel_places() {
    let mut core = core_with_channels_per_ip(3);
    let other: std::net::IpAddr = [127, 0, 0, 2].into();
    setup(&mut core, 1);
    setup(&mut core, 2);
    setup_from(&mut core, 3, other);
    let first = open(&mut core, 1).unwrap();
    open(&mut core, 1).unwrap();
    open(&mut core, 2).unwrap();
    assert_eq!(open(&mut core, 2), Err(TOO_MANY.into()));
    assert_eq!(open(&mut core, 1), Err(TOO_MANY.into()));
    for _ in 0..3 {
        open(&mut core, 3).expect("another address has places of its own");
    }

    close_channel(&mut core, 1, first);
    open(&mut core, 2).expect("a closed channel's place");
    assert_eq!(open(&mut core, 2), Err(TOO_MANY.into()));
    core.on_disconnect(2);
    open(&mut core, 1).expect("a place of a connection gone");
    open(&mut core, 1).expect("and the other");
    assert_eq!(open(&mut core, 1), Err(TOO_MANY.into()));
}

/// An IPv6 peer is counted by its /64, as the connection limits count it.
#[test]
fn the_hosts_of_one_ipv6_network_share_its_channel_places() {
    let mut core = core_with_channels_per_ip(1);
    setup_from(&mut core, 1, "2001:db8::1".parse().unwrap());
    setup_from(&mut core, 2, "2001:db8::2:0:0:7".parse().unwrap());
    setup_from(&mut core, 3, "2001:db8:0:1::1".parse().unwrap());
    open(&mut core, 1).unwrap();
    assert_eq!(open(&mut core, 2), Err(TOO_MANY.into()));
    open(&mut core, 3).expect("another /64");
}
