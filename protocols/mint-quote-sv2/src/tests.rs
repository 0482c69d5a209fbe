//! Golden vectors (the wire format, written out), round trips and hostile
//! input for every mint-quote message.

use super::*;
use ehash::wire::testing::{assert_golden, genesis_hash};
use ehash::wire::{str0255, MessageSet};
use stratum_core::bitcoin::blockdata::constants::genesis_block;
use stratum_core::bitcoin::consensus::serialize;
use stratum_core::bitcoin::Network;

fn s(text: &str) -> binary_sv2::Str0255Owned {
    str0255("test", text).unwrap()
}

fn genesis_header() -> ShareHeaderOwned {
    let hash = |hex_le: &str| -> binary_sv2::U256Owned {
        let b: [u8; 32] = hex::decode(hex_le).unwrap().try_into().unwrap();
        b.into()
    };
    ShareHeaderOwned {
        version: 1,
        prev_hash: [0u8; 32].into(),
        merkle_root: hash("3ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a"),
        time: 1231006505,
        bits: 0x1d00ffff,
        nonce: 2083236893,
    }
}

const SETUP_CONNECTION_FRAME: &str = concat!(
    "0000002c0000800100010000000000093132372e302e302e31d4850868617368",
    "706f6f6c0005302e312e3006706f6f6c2d31",
);

#[test]
fn setup_connection() {
    assert_golden(
        MintQuoteMessage::SetupConnection(SetupConnectionOwned {
            protocol: PROTOCOL,
            min_version: 1,
            max_version: 1,
            flags: 0,
            endpoint_host: s("127.0.0.1"),
            endpoint_port: 34260,
            vendor: s("hashpool"),
            hardware_version: s(""),
            firmware: s("0.1.0"),
            device_id: s("pool-1"),
        }),
        SETUP_CONNECTION_FRAME,
    );
}

#[test]
fn setup_connection_success() {
    assert_golden(
        MintQuoteMessage::SetupConnectionSuccess(SetupConnectionSuccess {
            used_version: 1,
            flags: 0,
        }),
        "000001060000010000000000",
    );
}

#[test]
fn setup_connection_error() {
    assert_golden(
        MintQuoteMessage::SetupConnectionError(SetupConnectionErrorOwned {
            flags: 0,
            error_code: s("unsupported-protocol"),
        }),
        "0000021900000000000014756e737570706f727465642d70726f746f636f6c",
    );
}

#[test]
fn pool_auth_challenge() {
    assert_golden(
        MintQuoteMessage::PoolAuthChallenge(auth::challenge([0x11; 32])),
        concat!(
            "0000852000001111111111111111111111111111111111111111111111111111",
            "111111111111",
        ),
    );
}

const POOL_AUTH_PROOF_FRAME: &str = concat!(
    "0000866000002222222222222222222222222222222222222222222222222222",
    "2222222222223333333333333333333333333333333333333333333333333333",
    "3333333333333333333333333333333333333333333333333333333333333333",
    "333333333333",
);

#[test]
fn pool_auth_proof() {
    assert_golden(
        MintQuoteMessage::PoolAuthProof(PoolAuthProofOwned {
            pool_key: [0x22; 32].into(),
            signature: [0x33; 64].into(),
        }),
        POOL_AUTH_PROOF_FRAME,
    );
}

#[test]
fn pool_auth_success() {
    assert_golden(
        MintQuoteMessage::PoolAuthSuccess(PoolAuthSuccess { unit_bits: 32 }),
        "00008701000020",
    );
}

#[test]
fn pool_auth_error() {
    assert_golden(
        MintQuoteMessage::PoolAuthError(PoolAuthErrorOwned {
            error_code: s(error_code::UNKNOWN_POOL_KEY),
        }),
        "00008811000010756e6b6e6f776e2d706f6f6c2d6b6579",
    );
}

/// The coinbase of the genesis block.
const GENESIS_COINBASE: &str = concat!(
    "0100000001000000000000000000000000000000000000000000000000000000",
    "0000000000ffffffff4d04ffff001d0104455468652054696d65732030332f4a",
    "616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f662073",
    "65636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a",
    "01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a679",
    "62e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a",
    "4c702b6bf11d5fac00000000",
);

const MINT_QUOTE_REQUEST_FRAME: &str = concat!(
    "0000808d01006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6",
    "1900000000000100000000000000000000000000000000000000000000000000",
    "000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a",
    "51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c00000000000000000000",
    "00000000000000000000000000000000ffff0000000001000000000000000468",
    "6173680279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b",
    "16f81798cc000100000001000000000000000000000000000000000000000000",
    "0000000000000000000000ffffffff4d04ffff001d0104455468652054696d65",
    "732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e",
    "6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffff",
    "ff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a8",
    "28e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384d",
    "f7ba0b8d578a4c702b6bf11d5fac0000000000",
);

#[test]
fn mint_quote_request() {
    let g =
        hex::decode("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798").unwrap();
    let mut diff1 = [0u8; 32];
    diff1[26] = 0xff;
    diff1[27] = 0xff;
    let request = MintQuoteRequestOwned {
        share_hash: genesis_hash().into(),
        header: genesis_header(),
        target: diff1.into(),
        amount: 1,
        unit: s("hash"),
        locking_key: CompressedPubKeyOwned {
            prefix: g[0],
            x: <[u8; 32]>::try_from(&g[1..]).unwrap().into(),
        },
        coinbase_tx: hex::decode(GENESIS_COINBASE).unwrap().try_into().unwrap(),
        merkle_path: Vec::new().try_into().unwrap(),
    };
    assert_eq!(
        hex::encode(serialize(&genesis_block(Network::Bitcoin).txdata[0])),
        GENESIS_COINBASE
    );
    // The genesis block has one transaction: its txid is the merkle root.
    let proof = request.proof();
    ehash::coinbase::check_coinbase(
        &request.header_bytes(),
        &proof.coinbase,
        &proof.merkle_path,
        &genesis_block(Network::Bitcoin).txdata[0].output[0].script_pubkey,
        &request.locking_key().unwrap(),
    )
    .expect_err("the genesis coinbase commits to no key");
    // The header's wire form is its consensus serialization: it hashes to share_hash.
    assert_eq!(
        ehash::share::header_hash(&request.header_bytes()),
        genesis_hash()
    );
    assert_eq!(request.locking_key().unwrap().to_string(), hex::encode(&g));
    assert_golden(
        MintQuoteMessage::MintQuoteRequest(request),
        MINT_QUOTE_REQUEST_FRAME,
    );
}

const MINT_QUOTE_RESPONSE_FRAME: &str = concat!(
    "0000815600006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6",
    "1900000000002439663063326135652d316237642d346531612d386633652d32",
    "64366335623461336632311030306231633264336534663561363937",
);

#[test]
fn mint_quote_response() {
    assert_golden(
        MintQuoteMessage::MintQuoteResponse(MintQuoteResponseOwned {
            share_hash: genesis_hash().into(),
            quote_id: s("9f0c2a5e-1b7d-4e1a-8f3e-2d6c5b4a3f21"),
            keyset_id: s("00b1c2d3e4f5a697"),
        }),
        MINT_QUOTE_RESPONSE_FRAME,
    );
}

const MINT_QUOTE_ERROR_FRAME: &str = concat!(
    "0000825200006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6",
    "1900000000000f616d6f756e742d6d69736d6174636821616d6f756e74203520",
    "6973206e6f74203120666f72207468697320746172676574",
);

#[test]
fn mint_quote_error() {
    assert_golden(
        MintQuoteMessage::MintQuoteError(MintQuoteErrorOwned {
            share_hash: genesis_hash().into(),
            error_code: s(error_code::AMOUNT_MISMATCH),
            error_message: s("amount 5 is not 1 for this target"),
        }),
        MINT_QUOTE_ERROR_FRAME,
    );
}

#[test]
fn mint_stats_request() {
    assert_golden(
        MintQuoteMessage::MintStatsRequest(MintStatsRequest { request_id: 7 }),
        "00008304000007000000",
    );
}

const MINT_STATS_RESPONSE_FRAME: &str = concat!(
    "0000842c00000700000000000000000000000300000000000000050000000000",
    "000008000000000000000500000000000000",
);

#[test]
fn mint_stats_response() {
    assert_golden(
        MintQuoteMessage::MintStatsResponse(MintStatsResponse {
            request_id: 7,
            quotes_unpaid: 0,
            quotes_paid: 3,
            quotes_issued: 5,
            ehash_quoted: 8,
            ehash_issued: 5,
        }),
        MINT_STATS_RESPONSE_FRAME,
    );
}

#[test]
fn unknown_types_and_protocols_are_refused() {
    assert!(matches!(
        MintQuoteMessage::decode_payload(0x7f, false, &mut [0u8; 4]),
        Err(DecodeError::UnknownMessageType { msg_type: 0x7f, .. })
    ));
    // A SetupConnection for the mining protocol decodes (the mint answers
    // it with SetupConnection.Error); SRI's own decoder refuses ours.
    let mut ours = hex::decode(concat!(
        "000000", "100000", "80", "0100", "0100", "00000000", "00", "0000", "00", "00", "00", "00"
    ))
    .unwrap();
    assert!(MintQuoteMessage::decode_frame(&mut ours).is_ok());
    let mut payload = ours[6..].to_vec();
    assert!(
        binary_sv2::from_bytes::<stratum_core::common_messages_sv2::SetupConnection>(&mut payload)
            .is_err()
    );
}

#[test]
fn a_version_1_quote_request_is_refused_with_an_error() {
    // The genesis request as version 1 framed it: no coinbase, no path.
    let mut v1 = hex::decode(concat!(
        "000080be00006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6",
        "1900000000000100000000000000000000000000000000000000000000000000",
        "000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a",
        "51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c00000000000000000000",
        "00000000000000000000000000000000ffff0000000001000000000000000468",
        "6173680279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b",
        "16f81798",
    ))
    .unwrap();
    assert!(MintQuoteMessage::decode_frame(&mut v1).is_err());
}

/// Every golden frame above, to mutate.
const GOLDEN_FRAMES: &[&str] = &[
    SETUP_CONNECTION_FRAME,
    POOL_AUTH_PROOF_FRAME,
    MINT_QUOTE_REQUEST_FRAME,
    MINT_QUOTE_RESPONSE_FRAME,
    MINT_QUOTE_ERROR_FRAME,
    MINT_STATS_RESPONSE_FRAME,
];

ehash::hostile_input_proptests!(MintQuoteMessage, GOLDEN_FRAMES);
