//! Golden vectors, round trips and hostile input for every stats message.

use super::*;
use ehash::wire::str0255;
use ehash::wire::testing::{assert_golden, decode_every_type};
use proptest::prelude::*;

const TS: u64 = 1_795_000_000_123;

fn block_hash() -> binary_sv2::U256Owned {
    let mut h: [u8; 32] =
        hex::decode("000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f")
            .unwrap()
            .try_into()
            .unwrap();
    h.reverse();
    h.into()
}

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
        "00000119000001000000020000000101000100010000007b5e56eea1010000",
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

#[test]
fn miner_connected() {
    assert_golden(
        StatsMessage::MinerConnected(MinerConnectedOwned {
            miner_id: 9,
            name: str0255("name", "alice.rig1").unwrap(),
            timestamp: TS,
        }),
        "000007170000090000000a616c6963652e726967317b5e56eea1010000",
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

#[test]
fn miner_share() {
    assert_golden(
        StatsMessage::MinerShare(MinerShare {
            miner_id: 9,
            accepted: false,
            work: 2,
            timestamp: TS,
        }),
        "000009150000090000000002000000000000007b5e56eea1010000",
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

#[test]
fn block_found() {
    let msg = StatsMessage::BlockFound(BlockFoundOwned {
        height: 101,
        block_hash: block_hash(),
        channel_id: 2,
        timestamp: TS,
    });
    assert_eq!(msg.timestamp(), TS);
    assert_golden(
        msg,
        concat!(
            "00000b300000650000006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a",
            "089c68d6190000000000020000007b5e56eea1010000",
        ),
    );
}

#[test]
fn publisher_hello() {
    assert_golden(
        StatsMessage::PublisherHello(PublisherHello {
            role: role::POOL,
            started_at: 1_795_000_000_000,
            dropped: 7,
            timestamp: TS,
        }),
        "00000c19000000005e56eea101000007000000000000007b5e56eea1010000",
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
    for msg_type in [0x00, 0x11, 0xFF] {
        assert!(matches!(
            StatsMessage::decode_payload(msg_type, false, &mut [0u8; 64]),
            Err(DecodeError::UnknownMessageType { .. })
        ));
    }
}

const GOLDEN_FRAMES: &[&str] = &[
    "00000119000001000000020000000101000100010000007b5e56eea1010000",
    "000007170000090000000a616c6963652e726967317b5e56eea1010000",
    "000009150000090000000002000000000000007b5e56eea1010000",
    concat!(
        "00000b300000650000006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a",
        "089c68d6190000000000020000007b5e56eea1010000",
    ),
];

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        decode_every_type::<StatsMessage>(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(
        which in 0..GOLDEN_FRAMES.len(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut frame = hex::decode(GOLDEN_FRAMES[which]).unwrap();
        for (pos, byte) in flips {
            let len = frame.len();
            frame[pos % len] = byte;
        }
        decode_every_type::<StatsMessage>(&frame);
    }
}
