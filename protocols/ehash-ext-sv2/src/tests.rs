//! Golden vectors, round trips and hostile input for the ehash extension.

use super::*;
use ehash::wire::str0255;
use ehash::wire::testing::{assert_golden, genesis_hash};

fn s(text: &str) -> binary_sv2::Str0255Owned {
    str0255("test", text).unwrap()
}

fn share_hash() -> binary_sv2::U256Owned {
    genesis_hash().into()
}

const NOTIFICATION_FRAME: &str = concat!(
    "a5cec0660000030000002a0000006fe28c0ab6f1b372c1a6a246ae63f74f931e",
    "8365e15a089c68d61900000000002439663063326135652d316237642d346531",
    "612d386633652d32643663356234613366323110303062316332643365346635",
    "613639370100000000000000",
);

#[test]
fn mint_quote_notification() {
    assert_golden(
        EhashMessage::MintQuoteNotification(MintQuoteNotificationOwned {
            channel_id: 3,
            sequence_number: 42,
            share_hash: share_hash(),
            quote_id: s("9f0c2a5e-1b7d-4e1a-8f3e-2d6c5b4a3f21"),
            keyset_id: s("00b1c2d3e4f5a697"),
            amount: 1,
        }),
        NOTIFICATION_FRAME,
    );
}

const FAILURE_FRAME: &str = concat!(
    "a5cec1590000030000002b0000006fe28c0ab6f1b372c1a6a246ae63f74f931e",
    "8365e15a089c68d61900000000000c6d696e742d74696d656f75742374686520",
    "6d696e7420646964206e6f7420616e737765722077697468696e2033302073",
);

#[test]
fn mint_quote_failure() {
    assert_golden(
        EhashMessage::MintQuoteFailure(MintQuoteFailureOwned {
            channel_id: 3,
            sequence_number: 43,
            share_hash: share_hash(),
            error_code: s("mint-timeout"),
            error_message: s("the mint did not answer within 30 s"),
        }),
        FAILURE_FRAME,
    );
}

const ACK_FRAME: &str = concat!(
    "a5cec2460000030000000200",
    "6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000",
    "0101010101010101010101010101010101010101010101010101010101010101",
);

#[test]
fn mint_quote_ack() {
    let hashes = [share_hash().to_array(), [1u8; 32]];
    let [ack] = &acks(3, &hashes)[..] else {
        panic!("one ack message")
    };
    assert_golden(ack.clone(), ACK_FRAME);
    assert_eq!(ack.channel_id(), 3);
    assert_eq!(ack.share_hash(), None);
}

#[test]
fn acks_are_split_at_the_message_limit() {
    let hashes: Vec<[u8; 32]> = (0..MAX_ACKED_PER_MESSAGE as u32 * 2 + 1)
        .map(|i| {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_le_bytes());
            h
        })
        .collect();
    let messages = acks(9, &hashes);
    let sizes: Vec<usize> = messages
        .iter()
        .map(|m| match m {
            EhashMessage::MintQuoteAck(a) => a.share_hashes.clone().into_inner().len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sizes, vec![MAX_ACKED_PER_MESSAGE, MAX_ACKED_PER_MESSAGE, 1]);
    assert!(acks(9, &[]).is_empty());
}

#[test]
fn frames_are_channel_messages_of_the_ehash_extension() {
    let mut frame = hex::decode(FAILURE_FRAME).unwrap();
    let header = stratum_core::framing_sv2::header::Header::from_bytes(&frame).unwrap();
    assert!(is_ehash_frame(&header));
    assert!(header.channel_msg());
    assert_eq!(header.ext_type_without_channel_msg(), 0x4EA5);
    // The payload starts with the channel id, as every channel message's does.
    let serialized =
        stratum_core::framing_sv2::framing::SerializedFrame::from_bytes(&mut frame[..]).unwrap();
    assert_eq!(serialized.channel_id(), Some(3));
}

#[test]
fn parsers_sv2_does_not_know_the_extension() {
    // Why roles must dispatch on the extension type before parsers_sv2.
    let mut frame = hex::decode(NOTIFICATION_FRAME).unwrap();
    let header = stratum_core::framing_sv2::header::Header::from_bytes(&frame).unwrap();
    let parsed = stratum_core::parsers_sv2::AnyMessage::try_from((header, &mut frame[6..]));
    assert!(parsed.is_err());
}

#[test]
fn negotiation_helpers() {
    let request = request_ehash_extension(9);
    assert_eq!(request.request_id, 9);
    assert_eq!(
        request.requested_extensions.clone().into_inner(),
        vec![0x4EA5]
    );
    let granted = stratum_core::extensions_sv2::RequestExtensionsSuccess {
        request_id: 9,
        supported_extensions: binary_sv2::Seq064K::new(vec![0x0002, 0x4EA5]).unwrap(),
    };
    assert!(grants_ehash_extension(&granted.into_owned()));
    let refused = stratum_core::extensions_sv2::RequestExtensionsSuccess {
        request_id: 9,
        supported_extensions: binary_sv2::Seq064K::new(vec![0x0002]).unwrap(),
    };
    assert!(!grants_ehash_extension(&refused.into_owned()));
}

#[test]
fn unknown_types_are_refused() {
    assert!(matches!(
        EhashMessage::decode_payload(0xC3, true, &mut [0u8; 48]),
        Err(DecodeError::UnknownMessageType { msg_type: 0xC3, .. })
    ));
}

const GOLDEN_FRAMES: &[&str] = &[NOTIFICATION_FRAME, FAILURE_FRAME, ACK_FRAME];

ehash::hostile_input_proptests!(EhashMessage, GOLDEN_FRAMES);
