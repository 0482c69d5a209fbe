//! Golden vectors, round trips and hostile input for every stats message.

use super::*;
use ehash::wire::str0255;
use ehash::wire::testing::{assert_golden, genesis_hash};

const TS: u64 = 1_795_000_000_123;

const SHARE_SUBMITTED_FRAME: &str =
    "00000119000001000000020000000101000100010000007b5e56eea1010000";

#[test]
fn share_submitted() {
    assert_golden(
        StatsMessage::ShareSubmitted(ShareSubmitted {
            downstream_id: 1,
            channel_id: 2,
            accepted: true,
            work: 4_295_032_833,
            timestamp: TS,
        }),
        SHARE_SUBMITTED_FRAME,
    );
}

#[test]
fn quote_created() {
    assert_golden(
        StatsMessage::QuoteCreated(QuoteCreated {
            downstream_id: 1,
            channel_id: 2,
            amount: 1,
            timestamp: TS,
        }),
        "000002180000010000000200000001000000000000007b5e56eea1010000",
    );
}

#[test]
fn channel_opened() {
    assert_golden(
        StatsMessage::ChannelOpened(ChannelOpened {
            downstream_id: 1,
            channel_id: 2,
            timestamp: TS,
        }),
        "00000310000001000000020000007b5e56eea1010000",
    );
}

#[test]
fn channel_closed() {
    assert_golden(
        StatsMessage::ChannelClosed(ChannelClosed {
            downstream_id: 1,
            channel_id: 2,
            timestamp: TS,
        }),
        "00000410000001000000020000007b5e56eea1010000",
    );
}

#[test]
fn downstream_connected() {
    assert_golden(
        StatsMessage::DownstreamConnected(DownstreamConnected {
            downstream_id: 1,
            flags: 6,
            timestamp: TS,
        }),
        "00000510000001000000060000007b5e56eea1010000",
    );
}

#[test]
fn downstream_disconnected() {
    assert_golden(
        StatsMessage::DownstreamDisconnected(DownstreamDisconnected {
            downstream_id: 1,
            timestamp: TS,
        }),
        "0000060c0000010000007b5e56eea1010000",
    );
}

const MINER_CONNECTED_FRAME: &str = "000007170000090000000a616c6963652e726967317b5e56eea1010000";

#[test]
fn miner_connected() {
    assert_golden(
        StatsMessage::MinerConnected(MinerConnectedOwned {
            miner_id: 9,
            name: str0255("name", "alice.rig1").unwrap(),
            timestamp: TS,
        }),
        MINER_CONNECTED_FRAME,
    );
}

#[test]
fn miner_disconnected() {
    assert_golden(
        StatsMessage::MinerDisconnected(MinerDisconnected {
            miner_id: 9,
            timestamp: TS,
        }),
        "0000080c0000090000007b5e56eea1010000",
    );
}

const MINER_SHARE_FRAME: &str = "00000916000009000000000102000000000000007b5e56eea1010000";

#[test]
fn miner_share() {
    assert_golden(
        StatsMessage::MinerShare(MinerShare {
            miner_id: 9,
            accepted: false,
            backlogged: true,
            work: 2,
            timestamp: TS,
        }),
        MINER_SHARE_FRAME,
    );
}

#[test]
fn hashrate_update() {
    assert_golden(
        StatsMessage::HashrateUpdate(HashrateUpdate {
            miner_id: 9,
            hashrate: 1_500_000,
            timestamp: TS,
        }),
        "00000a1400000900000060e31600000000007b5e56eea1010000",
    );
}

const BLOCK_FOUND_FRAME: &str = concat!(
    "00000b300000650000006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a",
    "089c68d6190000000000020000007b5e56eea1010000",
);

#[test]
fn block_found() {
    let msg = StatsMessage::BlockFound(BlockFoundOwned {
        height: 101,
        block_hash: genesis_hash().into(),
        channel_id: 2,
        timestamp: TS,
    });
    assert_eq!(msg.timestamp(), TS);
    assert_golden(msg, BLOCK_FOUND_FRAME);
}

const PUBLISHER_HELLO_FRAME: &str = concat!(
    "0000112c0000",
    "0300",
    "00",
    "005e56eea1010000",
    "0700000000000000",
    "1030313233343536373839616263646566",
    "7b5e56eea1010000",
);

#[test]
fn publisher_hello() {
    let hello =
        PublisherHello::new(role::POOL, 1_795_000_000_000, 7, b"0123456789abcdef", TS).unwrap();
    assert_eq!(hello.version, PROTOCOL_VERSION);
    assert_eq!((MIN_PROTOCOL_VERSION, PROTOCOL_VERSION), (2, 3));
    assert_golden(StatsMessage::PublisherHello(hello), PUBLISHER_HELLO_FRAME);
}

#[test]
fn a_publisher_hello_without_a_secret_is_valid() {
    let hello = PublisherHello::new(role::TRANSLATOR, 1, 0, b"", 2).unwrap();
    let mut frame = StatsMessage::PublisherHello(hello.clone())
        .to_frame_bytes()
        .unwrap();
    assert_eq!(
        StatsMessage::decode_frame(&mut frame).unwrap(),
        StatsMessage::PublisherHello(hello)
    );
}

#[test]
fn a_secret_longer_than_a_hello_carries_is_an_error() {
    assert!(PublisherHello::new(role::POOL, 1, 0, &[b'x'; MAX_SECRET_LEN], 2).is_ok());
    let err = PublisherHello::new(role::POOL, 1, 0, &[b'x'; MAX_SECRET_LEN + 1], 2).unwrap_err();
    assert!(!err.to_string().contains("xxx"), "{err}");
}

#[test]
fn debug_output_hides_the_secret() {
    let hello = PublisherHello::new(role::POOL, 1, 0, b"0123456789abcdef", 2).unwrap();
    let shown = format!("{:?}", StatsMessage::PublisherHello(hello));
    assert!(shown.contains("(hidden)"), "{shown}");
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
    assert!(!shown.contains("30313233"), "{shown}");
    let none = PublisherHello::new(role::POOL, 1, 0, b"", 2).unwrap();
    assert!(format!("{none:?}").contains("secret: \"none\""));
}

#[test]
fn the_version_1_hello_is_no_longer_decoded() {
    // Its number is kept apart so services can recognise it.
    let mut v1 =
        hex::decode("00000c19000000005e56eea101000007000000000000007b5e56eea1010000").unwrap();
    assert_eq!(v1[2], PUBLISHER_HELLO_V1);
    assert!(matches!(
        StatsMessage::decode_frame(&mut v1),
        Err(DecodeError::UnknownMessageType { msg_type, .. }) if msg_type == PUBLISHER_HELLO_V1
    ));
}

#[test]
fn keepalive() {
    assert_golden(
        StatsMessage::Keepalive(Keepalive { timestamp: TS }),
        "0000120800007b5e56eea1010000",
    );
}

#[test]
fn live_begin() {
    assert_golden(
        StatsMessage::LiveBegin(LiveBegin { timestamp: TS }),
        "0000130800007b5e56eea1010000",
    );
}

const LIVE_ENTRY_FRAME: &str = concat!(
    "000014280000",
    "02",
    "01000000",
    "00000000",
    "00000000",
    "0a616c6963652e72696731",
    "7a5e56eea1010000",
    "7b5e56eea1010000",
);

#[test]
fn live_entry() {
    assert_golden(
        StatsMessage::LiveEntry(LiveEntryOwned {
            kind: live::MINER,
            id: 1,
            channel_id: 0,
            flags: 0,
            name: str0255("name", "alice.rig1").unwrap(),
            since: TS - 1,
            timestamp: TS,
        }),
        LIVE_ENTRY_FRAME,
    );
}

#[test]
fn live_end() {
    assert_golden(
        StatsMessage::LiveEnd(LiveEnd {
            entries: 3,
            timestamp: TS,
        }),
        "0000150c0000030000007b5e56eea1010000",
    );
}

#[test]
fn link_status() {
    assert_golden(
        StatsMessage::LinkStatus(LinkStatus {
            link: link::MINT,
            up: true,
            timestamp: TS,
        }),
        "00000d0a000001017b5e56eea1010000",
    );
}

#[test]
fn mint_stats() {
    assert_golden(
        StatsMessage::MintStats(MintStats {
            quotes_unpaid: 0,
            quotes_paid: 3,
            quotes_issued: 5,
            ehash_quoted: 8192,
            ehash_issued: 5120,
            timestamp: TS,
        }),
        concat!(
            "00000e3000000000000000000000030000000000000005000000000000000020",
            "00000000000000140000000000007b5e56eea1010000",
        ),
    );
}

#[test]
fn wallet_balance() {
    assert_golden(
        StatsMessage::WalletBalance(WalletBalance {
            balance: 123_456,
            timestamp: TS,
        }),
        "00000f10000040e20100000000007b5e56eea1010000",
    );
}

#[test]
fn ehash_quote() {
    let msg = StatsMessage::EhashQuote(EhashQuoteOwned {
        quote_id: str0255("quote_id", "5f0c1a2b").unwrap(),
        amount: 1024,
        minted: true,
        timestamp: TS,
    });
    assert_eq!(msg.timestamp(), TS);
    assert_golden(
        msg,
        "0000101a00000835663063316132620004000000000000017b5e56eea1010000",
    );
}

#[test]
fn a_bool_is_read_from_its_low_bit_only() {
    // The SV2 spec: recipients must not interpret the 7 padding bits of a BOOL.
    let golden = StatsMessage::MinerShare(MinerShare {
        miner_id: 9,
        accepted: false,
        backlogged: false,
        work: 2,
        timestamp: TS,
    })
    .to_frame_bytes()
    .unwrap();
    for (byte, accepted) in [(0x02, false), (0x03, true), (0xff, true)] {
        let mut frame = golden.clone();
        frame[6 + 4] = byte; // `accepted`
        match StatsMessage::decode_frame(&mut frame).unwrap() {
            StatsMessage::MinerShare(m) => assert_eq!(m.accepted, accepted),
            other => panic!("decoded as {other:?}"),
        }
    }
}

#[test]
fn unknown_types_are_refused() {
    for msg_type in [0x00, PUBLISHER_HELLO_V1, 0x16, 0xFF] {
        assert!(matches!(
            StatsMessage::decode_payload(msg_type, false, &mut [0u8; 64]),
            Err(DecodeError::UnknownMessageType { .. })
        ));
    }
}

const GOLDEN_FRAMES: &[&str] = &[
    SHARE_SUBMITTED_FRAME,
    MINER_CONNECTED_FRAME,
    MINER_SHARE_FRAME,
    BLOCK_FOUND_FRAME,
    PUBLISHER_HELLO_FRAME,
    LIVE_ENTRY_FRAME,
];

ehash::hostile_input_proptests!(StatsMessage, GOLDEN_FRAMES);
