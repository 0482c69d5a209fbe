//! Tests of the sans-IO pool core: connection setup, channels, shares, blocks, stats events.

use super::*;
use ehash::wire::str0255_truncated;
use ehash_ext_sv2::EHASH_EXTENSION_TYPE;
use stratum_core::binary_sv2::{B032Owned, B064KOwned, Seq0255Owned, Seq064KOwned};
use stratum_core::bitcoin::consensus::serialize as ser;
use stratum_core::bitcoin::{
    hashes::{sha256d, Hash},
    pow::CompactTarget,
    Amount, TxOut,
};
use stratum_core::channels_sv2::merkle_root::merkle_root_from_path;
use stratum_core::channels_sv2::server::extended::ExtendedChannel;
use stratum_core::common_messages_sv2::{Protocol, SetupConnectionOwned};
use stratum_core::extensions_sv2::RequestExtensionsOwned;
use stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, OpenExtendedMiningChannelOwned,
    OpenStandardMiningChannelOwned, SubmitSharesExtendedOwned, SubmitSharesStandardOwned,
    UpdateChannelOwned,
};

mod custom_jobs;
mod idle;
mod limits;
mod renewal;
mod targets;
mod vardiff;

const NEVER: u32 = 0x0300_0001;
const EASY: u32 = 0x207f_ffff;
/// The tip's time: before the pool's clock, as a template provider's is.
const TIP_TIME: u32 = 1_700_000_000;
const KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

fn core() -> PoolCore {
    PoolCore::new(config()).unwrap()
}

/// A core with a job declarator taking coinbase-only clients too.
/// A core with a mint paying one ehash for `2^bits` hashes: no target
/// easier than one ehash, every one worth a whole amount.
fn core_with_a_mint(bits: UnitBits) -> PoolCore {
    let mut core = core();
    core.config.unit_bits = bits;
    core.config.whole_units = true;
    core.config.easiest_target = Some(ehash::easiest_target(bits));
    core
}

fn core_with_job_declaration() -> PoolCore {
    PoolCore::new(CoreConfig {
        job_declaration: true,
        allow_coinbase_only: true,
        ..config()
    })
    .unwrap()
}

/// The address test connections come from.
const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn config() -> CoreConfig {
    CoreConfig {
        pool_signature: "test".into(),
        reward_script: ScriptBuf::from_bytes(vec![0x51]),
        shares_per_minute: 6.0,
        share_batch_size: 1,
        unit_bits: UnitBits::new(0).unwrap(),
        whole_units: false,
        easiest_target: None,
        require_locking_key: true,
        max_channels: 1000,
        max_channels_per_connection: 100,
        max_channels_per_ip: 1000,
        idle_channels: None,
        extranonce_len: 16,
        acknowledge_shares: true,
        job_declaration: false,
        allow_coinbase_only: true,
        max_custom_jobs: 1_000_000,
        max_custom_jobs_per_address: 1_000_000,
    }
}

fn template(id: u64) -> NewTemplateOwned {
    let out = TxOut {
        value: Amount::ZERO,
        script_pubkey: ehash::coinbase::witness_commitment_script(&[], &[0; 32]),
    };
    NewTemplateOwned {
        template_id: id,
        future_template: true,
        version: 0x2000_0000,
        coinbase_tx_version: 2,
        coinbase_prefix: vec![0x01, 0x01].try_into().unwrap(),
        coinbase_tx_input_sequence: u32::MAX,
        coinbase_tx_value_remaining: 5_000_000_000,
        coinbase_tx_outputs_count: 1,
        coinbase_tx_outputs: B064KOwned::new(ser(&out)).unwrap(),
        coinbase_tx_locktime: 0,
        merkle_path: Seq0255Owned::new(Vec::new()).unwrap(),
    }
}

fn prev(id: u64, nbits: u32) -> SetNewPrevHashOwned {
    SetNewPrevHashOwned {
        template_id: id,
        prev_hash: U256Owned::from([7u8; 32]),
        header_timestamp: TIP_TIME,
        n_bits: nbits,
        target: U256Owned::from(
            Target::from_compact(CompactTarget::from_consensus(nbits)).to_le_bytes(),
        ),
    }
}

/// `on_message` without its stats events (tests of those look at them).
fn on_message(core: &mut PoolCore, conn: ConnId, msg: AnyMessageOwned) -> Vec<Action> {
    core.on_message(conn, msg)
        .into_iter()
        .filter(|a| !matches!(a, Action::Stats(_)))
        .collect()
}

/// Connection `conn` closes its channel `channel_id` (the answer without
/// its stats events).
fn close_channel(core: &mut PoolCore, conn: ConnId, channel_id: u32) -> Vec<Action> {
    let close = MiningOwned::CloseChannel(CloseChannelOwned {
        channel_id,
        reason_code: str0255_truncated("done"),
    });
    on_message(core, conn, AnyMessageOwned::Mining(close))
}

fn stats_events(actions: &[Action]) -> Vec<StatsEvent> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Stats(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn setup_message(flags: u32) -> AnyMessageOwned {
    AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(SetupConnectionOwned {
        protocol: Protocol::MiningProtocol,
        min_version: 2,
        max_version: 2,
        flags,
        endpoint_host: str0255_truncated(""),
        endpoint_port: 0,
        vendor: str0255_truncated("t"),
        hardware_version: str0255_truncated(""),
        firmware: str0255_truncated(""),
        device_id: str0255_truncated(""),
    }))
}

fn setup(core: &mut PoolCore, conn: ConnId) {
    setup_from(core, conn, LOCAL);
}

/// A connection from `peer`, set up.
fn setup_from(core: &mut PoolCore, conn: ConnId, peer: std::net::IpAddr) {
    core.on_connect(conn, peer);
    let actions = on_message(core, conn, setup_message(0));
    assert!(matches!(
        &actions[..],
        [Action::Send(
            _,
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionSuccess(_))
        )]
    ));
}

fn open_extended(identity: &str) -> AnyMessageOwned {
    AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannel(
        OpenExtendedMiningChannelOwned {
            request_id: 1,
            user_identity: str0255_truncated(identity),
            nominal_hash_rate: 10.0,
            max_target: U256Owned::from([0xff; 32]),
            min_extranonce_size: 4,
        },
    ))
}

fn request_extensions(exts: Vec<u16>) -> AnyMessageOwned {
    AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(
        ExtensionsNegotiationOwned::RequestExtensions(RequestExtensionsOwned {
            request_id: 3,
            requested_extensions: Seq064KOwned::new(exts).unwrap(),
        }),
    ))
}

#[test]
fn anything_before_setup_connection_closes_the_connection() {
    let mut core = core();
    core.on_connect(1, LOCAL);
    let actions = on_message(&mut core, 1, open_extended(KEY));
    match &actions[..] {
        [Action::Close(1, reason)] => {
            assert_eq!(reason, "OpenExtendedMiningChannel before SetupConnection")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ehash_is_granted_and_unknown_extensions_refused() {
    let mut core = core();
    setup(&mut core, 1);
    // Only unknown extensions: RequestExtensions.Error naming them.
    let actions = on_message(&mut core, 1, request_extensions(vec![0x0002]));
    match &actions[..] {
        [Action::Send(
            1,
            AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(
                ExtensionsNegotiationOwned::RequestExtensionsError(e),
            )),
        )] => assert_eq!(e.unsupported_extensions.clone().into_inner(), vec![0x0002]),
        other => panic!("{other:?}"),
    }
    assert!(!core.connection_has_ehash(1));
    // ehash among unknown ones: only ehash is granted.
    let actions = on_message(
        &mut core,
        1,
        request_extensions(vec![0x0002, EHASH_EXTENSION_TYPE]),
    );
    match &actions[..] {
        [Action::Send(
            1,
            AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(
                ExtensionsNegotiationOwned::RequestExtensionsSuccess(s),
            )),
        )] => assert_eq!(
            s.supported_extensions.clone().into_inner(),
            vec![EHASH_EXTENSION_TYPE]
        ),
        other => panic!("{other:?}"),
    }
    assert!(core.connection_has_ehash(1));
}

#[test]
fn a_channel_without_locking_key_is_refused() {
    let mut core = core();
    setup(&mut core, 1);
    let actions = on_message(&mut core, 1, open_extended("alice.rig1"));
    match &actions[..] {
        [Action::Send(1, AnyMessageOwned::Mining(MiningOwned::OpenMiningChannelError(e)))] => {
            assert_eq!(e.error_code.as_bytes(), ERROR_NO_LOCKING_KEY.as_bytes())
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(core.stats().channels_open, 0);
}

/// Opens a channel on a tip with `nbits`; returns the channel id, its job and target.
fn open_on_tip(core: &mut PoolCore, nbits: u32) -> (u32, NewExtendedMiningJobOwned, Target) {
    setup(core, 1);
    assert!(core.on_new_template(template(1)).is_empty());
    assert!(core.on_set_new_prev_hash(prev(1, nbits)).is_empty());
    let actions = on_message(core, 1, open_extended(&format!("{KEY}.w")));
    let mut channel = None;
    let mut job = None;
    let mut saw_prev = false;
    for a in actions {
        match a {
            Action::Send(
                1,
                AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(s)),
            ) => channel = Some((s.channel_id, Target::from_le_bytes(s.target.to_array()))),
            Action::Send(1, AnyMessageOwned::Mining(MiningOwned::NewExtendedMiningJob(j))) => {
                job = Some(j)
            }
            Action::Send(1, AnyMessageOwned::Mining(MiningOwned::SetNewPrevHash(p))) => {
                saw_prev = true;
                assert_eq!(Some(p.job_id), job.as_ref().map(|j| j.job_id));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(saw_prev);
    let (id, target) = channel.unwrap();
    (id, job.unwrap(), target)
}

fn share(
    core: &PoolCore,
    channel_id: u32,
    job: &NewExtendedMiningJobOwned,
    accept: impl Fn(Target) -> bool,
) -> (SubmitSharesExtendedOwned, [u8; 80]) {
    share_from(core, channel_id, job, 0, accept)
}

/// The first share from nonce `first_nonce` on that `accept`s its hash.
fn share_from(
    core: &PoolCore,
    channel_id: u32,
    job: &NewExtendedMiningJobOwned,
    first_nonce: u32,
    accept: impl Fn(Target) -> bool,
) -> (SubmitSharesExtendedOwned, [u8; 80]) {
    let c = core.channels[&channel_id]
        .extended()
        .expect("an extended channel");
    share_on_prefix(c, c.get_extranonce_prefix(), job, first_nonce, accept)
}

/// [`share_from`] on a job sent with extranonce prefix `prefix`.
fn share_on_prefix(
    c: &ExtendedChannel,
    prefix: &[u8],
    job: &NewExtendedMiningJobOwned,
    first_nonce: u32,
    accept: impl Fn(Target) -> bool,
) -> (SubmitSharesExtendedOwned, [u8; 80]) {
    let channel_id = c.get_channel_id();
    let extranonce = vec![9u8; c.get_rollable_extranonce_size() as usize];
    let mut full = prefix.to_vec();
    full.extend_from_slice(&extranonce);
    let root = merkle_root_from_path(
        job.coinbase_tx_prefix.as_bytes(),
        job.coinbase_tx_suffix.as_bytes(),
        &full,
        job.merkle_path.as_slice(),
    )
    .unwrap();
    for nonce in first_nonce.. {
        let header = header_bytes(
            job.version,
            [7u8; 32],
            root,
            TIP_TIME,
            c.get_chain_tip().unwrap().nbits(),
            nonce,
        );
        if accept(Target::from_le_bytes(
            sha256d::Hash::hash(&header).to_byte_array(),
        )) {
            return (
                SubmitSharesExtendedOwned {
                    channel_id,
                    sequence_number: nonce,
                    job_id: job.job_id,
                    nonce,
                    ntime: TIP_TIME,
                    version: job.version,
                    extranonce: B032Owned::new(extranonce).unwrap(),
                },
                header,
            );
        }
    }
    unreachable!()
}

#[test]
fn with_the_ehash_flow_the_core_publishes_shares_but_never_acknowledges_them() {
    let mut core = core();
    core.config.acknowledge_shares = false;
    let (channel_id, job, target) = open_on_tip(&mut core, NEVER);
    let (submit, _) = share(&core, channel_id, &job, |h| h <= target);
    let actions = on_message(
        &mut core,
        1,
        AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(submit)),
    );
    assert!(matches!(&actions[..], [Action::Accepted(a)] if a.channel_id == channel_id));
    // The channel's key is found for the flow's routing.
    let key: LockingKey = KEY.parse().unwrap();
    assert_eq!(core.announce_channel(channel_id), Some((Some(key), false)));
    assert_eq!(
        core.ehash_channel_with_key(&key, &[]),
        None,
        "connection 1 did not negotiate ehash"
    );
}

#[test]
fn an_accepted_share_carries_its_exact_header_and_amount() {
    let mut core = core();
    let (channel_id, job, target) = open_on_tip(&mut core, NEVER);
    let (submit, header) = share(&core, channel_id, &job, |h| h <= target);
    let actions = on_message(
        &mut core,
        1,
        AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(submit.clone())),
    );
    let mut accepted = None;
    for a in &actions {
        match a {
            Action::Send(1, AnyMessageOwned::Mining(MiningOwned::SubmitSharesSuccess(s))) => {
                assert_eq!(s.last_sequence_number, submit.sequence_number)
            }
            Action::Accepted(a) => accepted = Some(a.clone()),
            other => panic!("{other:?}"),
        }
    }
    let a = accepted.expect("published");
    assert_eq!(a.header, header);
    assert_eq!(sha256d::Hash::hash(&a.header).to_byte_array(), a.share_hash);
    assert_eq!(a.target, target.to_le_bytes());
    assert_eq!(
        a.amount,
        ehash::ehash_amount(target, UnitBits::new(0).unwrap())
    );
    assert_eq!(a.locking_key.unwrap().to_string(), KEY);
    assert_eq!(
        (a.connection_id, a.channel_id, a.block_found),
        (1, channel_id, false)
    );

    // The same share again is a duplicate; a weak one is too low.
    let actions = on_message(
        &mut core,
        1,
        AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(submit)),
    );
    assert!(
        matches!(&actions[..], [Action::Send(1, AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(e)))] if e.error_code.as_bytes() == b"duplicate-share")
    );
    let (weak, _) = share(&core, channel_id, &job, |h| h > target);
    let actions = on_message(
        &mut core,
        1,
        AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(weak)),
    );
    assert!(
        matches!(&actions[..], [Action::Send(1, AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(e)))] if e.error_code.as_bytes() == b"difficulty-too-low")
    );

    // After the tip moves, the old job is stale.
    core.on_new_template(template(2));
    let actions = core.on_set_new_prev_hash(SetNewPrevHashOwned {
        prev_hash: U256Owned::from([8u8; 32]),
        ..prev(2, NEVER)
    });
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Send(1, AnyMessageOwned::Mining(MiningOwned::SetNewPrevHash(_)))
    )));
    let (late, _) = share(&core, channel_id, &job, |_| true);
    let actions = on_message(
        &mut core,
        1,
        AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(late)),
    );
    assert!(
        matches!(&actions[..], [Action::Send(1, AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(e)))] if e.error_code.as_bytes() == b"stale-share")
    );

    // Disconnecting frees the channel.
    core.on_disconnect(1);
    assert_eq!(core.stats().channels_open, 0);
}

/// Submits `share` and returns what the core published about it.
fn accepted(core: &mut PoolCore, share: MiningOwned) -> AcceptedShare {
    on_message(core, 1, AnyMessageOwned::Mining(share))
        .into_iter()
        .find_map(|a| match a {
            Action::Accepted(a) => Some(a),
            _ => None,
        })
        .expect("the share is accepted")
}

/// The job declarator has a lock of its own: while it is busy (hashing a
/// large declaration), shares are validated all the same.
#[test]
fn shares_are_validated_while_the_job_declarator_is_busy() {
    let mut core = core_with_job_declaration();
    let (channel_id, job, target) = open_on_tip(&mut core, NEVER);
    let (submit, _) = share(&core, channel_id, &job, |h| h <= target);
    let declarator = core.jds_handle().unwrap();
    let busy = declarator.lock().unwrap();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let share = AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(submit));
            let _ = done_tx.send(on_message(&mut core, 1, share));
        });
        let actions = done.recv_timeout(std::time::Duration::from_secs(10));
        drop(busy);
        let actions = actions.expect("the share waited for the job declarator");
        assert!(actions.iter().any(|a| matches!(a, Action::Accepted(_))));
    });
}

/// Checks an accepted share's coinbase proof the way the mint does: the
/// block height it is for, if the coinbase says.
fn check_proof(share: &AcceptedShare, key: &str) -> Result<Option<u32>, ehash::CoinbaseError> {
    let proof = share
        .proof
        .as_ref()
        .expect("a share with a key has a proof");
    ehash::check_coinbase(
        &share.header,
        &proof.coinbase,
        &proof.merkle_path,
        &ScriptBuf::from_bytes(vec![0x51]),
        &key.parse().unwrap(),
    )
}

#[test]
fn shares_of_both_kinds_prove_their_coinbase_and_key() {
    let other_key = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";
    let mut core = core();
    setup(&mut core, 1);
    // A template with other transactions: the proof needs a merkle path.
    let with_txs = NewTemplateOwned {
        merkle_path: Seq0255Owned::new(vec![U256Owned::from([1; 32]), U256Owned::from([2; 32])])
            .unwrap(),
        ..template(1)
    };
    core.on_new_template(with_txs);
    core.on_set_new_prev_hash(prev(1, NEVER));

    // Extended: the miner's extranonce is part of the coinbase.
    on_message(&mut core, 1, open_extended(&format!("{KEY}.e")));
    let extended = *core.channels.keys().max().unwrap();
    let job = core.channels[&extended]
        .extended()
        .unwrap()
        .get_active_job()
        .unwrap()
        .get_job_message()
        .clone();
    let target = core.channels[&extended].target();
    let (submit, header) = share(&core, extended, &job, |h| h <= target);
    let a = accepted(&mut core, MiningOwned::SubmitSharesExtended(submit));
    assert_eq!(a.header, header);
    assert!(!a.ehash, "its connection did not negotiate the extension");
    assert_eq!(a.proof.as_ref().unwrap().merkle_path.len(), 2);
    // The template's height (its coinbase prefix), which the mint reads.
    assert_eq!(check_proof(&a, KEY), Ok(Some(1)));
    assert_eq!(
        check_proof(&a, other_key),
        Err(ehash::CoinbaseError::KeyCommitmentMismatch)
    );

    // Standard: the coinbase is rebuilt from the job's template.
    let open = OpenStandardMiningChannelOwned {
        request_id: 2,
        user_identity: str0255_truncated(&format!("{KEY}.s")),
        nominal_hash_rate: 10.0,
        max_target: U256Owned::from([0xff; 32]),
    };
    let mut job = None;
    for action in on_message(&mut core, 1, AnyMessageOwned::Mining(open.into())) {
        if let Action::Send(1, AnyMessageOwned::Mining(MiningOwned::NewMiningJob(j))) = action {
            job = Some(j);
        }
    }
    let job = job.expect("a standard job");
    let standard = job.channel_id;
    let target = core.channels[&standard].target();
    let mined = |nonce| {
        header_bytes(
            job.version,
            [7u8; 32],
            job.merkle_root.to_array(),
            TIP_TIME,
            NEVER,
            nonce,
        )
    };
    let meets =
        |h: &[u8; 80]| Target::from_le_bytes(sha256d::Hash::hash(h).to_byte_array()) <= target;
    let nonce = (0u32..).find(|n| meets(&mined(*n))).unwrap();
    let header = mined(nonce);
    let submit = SubmitSharesStandardOwned {
        channel_id: standard,
        sequence_number: 1,
        job_id: job.job_id,
        nonce,
        ntime: TIP_TIME,
        version: job.version,
    };
    let a = accepted(&mut core, MiningOwned::SubmitSharesStandard(submit));
    assert_eq!(a.header, header);
    // The template's height (its coinbase prefix), which the mint reads.
    assert_eq!(check_proof(&a, KEY), Ok(Some(1)));
    assert_eq!(
        check_proof(&a, other_key),
        Err(ehash::CoinbaseError::KeyCommitmentMismatch)
    );
}

#[test]
fn a_block_share_becomes_a_submit_solution() {
    let mut core = core();
    let (channel_id, job, target) = open_on_tip(&mut core, EASY);
    let network = Target::from_compact(CompactTarget::from_consensus(EASY));
    let (submit, header) = share(&core, channel_id, &job, |h| h <= target && h <= network);
    let actions = core.on_message(
        1,
        AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(submit.clone())),
    );
    let solution = actions
        .iter()
        .find_map(|a| match a {
            Action::SubmitSolution(s) => Some(s.clone()),
            _ => None,
        })
        .expect("solution");
    assert_eq!(solution.template_id, 1);
    assert_eq!(solution.header_nonce, submit.nonce);
    // The solution's coinbase hashes to the header's merkle root.
    let tx: stratum_core::bitcoin::Transaction =
        stratum_core::bitcoin::consensus::deserialize(solution.coinbase_tx.as_bytes()).unwrap();
    assert_eq!(
        &header[36..68],
        tx.compute_txid().to_byte_array().as_slice()
    );
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Accepted(s) if s.block_found)));
    assert_eq!(core.stats().blocks_found, 1);
    // Height 1: the template's coinbase prefix pushes 1 (BIP 34).
    assert!(stats_events(&actions).contains(&StatsEvent::BlockFound {
        channel_id,
        height: 1,
        block_hash: sha256d::Hash::hash(&header).to_byte_array(),
    }));
}

/// A restarted template provider counts its template ids from its start
/// again: its SetNewPrevHash activates its own template, never a future
/// template of the last link with the same id.
#[test]
fn a_new_template_provider_link_activates_its_own_templates() {
    let mut core = core();
    core.on_new_template(template(1));
    core.on_set_new_prev_hash(prev(1, NEVER));
    core.on_new_template(template(2));

    core.on_template_provider_connected();
    let mut restarted = template(2);
    restarted.coinbase_tx_value_remaining = 1_000;
    core.on_new_template(restarted);
    core.on_set_new_prev_hash(prev(2, NEVER));
    let active = core.current_template().expect("a template on the tip");
    assert_eq!(active.coinbase_tx_value_remaining, 1_000);
}

/// A channel harder than the network (a fast miner on an easy chain) finds
/// a block with a hash above its own target: the block is submitted, and
/// the share is quoted at the network's target, which it met.
#[test]
fn a_block_above_its_channels_target_is_credited_at_the_networks() {
    let mut core = core();
    let (channel_id, job, target) = open_on_tip(&mut core, EASY);
    let network = Target::from_compact(CompactTarget::from_consensus(EASY));
    assert!(target < network, "the channel is harder than the network");
    let (submit, header) = share(&core, channel_id, &job, |h| h > target && h <= network);
    let actions = core.on_message(
        1,
        AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(submit)),
    );
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::SubmitSolution(_))));
    let accepted = actions
        .iter()
        .find_map(|a| match a {
            Action::Accepted(s) => Some(s.clone()),
            _ => None,
        })
        .expect("accepted");
    let hash = Target::from_le_bytes(sha256d::Hash::hash(&header).to_byte_array());
    let credited = Target::from_le_bytes(accepted.target);
    assert_eq!(credited, network);
    assert!(hash <= credited, "the mint checks the hash against it");
    assert_eq!(
        accepted.amount,
        ehash::ehash_amount(network, UnitBits::new(0).unwrap())
    );
}

/// Opens an extended channel on connection 1, checking its one stats event;
/// returns its id, target and first job.
fn open_with_event(core: &mut PoolCore) -> (u32, Target, NewExtendedMiningJobOwned) {
    let actions = core.on_message(1, open_extended(&format!("{KEY}.w")));
    let (channel_id, target) = actions
        .iter()
        .find_map(|a| match a {
            Action::Send(
                _,
                AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(s)),
            ) => Some((s.channel_id, Target::from_le_bytes(s.target.to_array()))),
            _ => None,
        })
        .expect("opened");
    let job = actions
        .iter()
        .find_map(|a| match a {
            Action::Send(_, AnyMessageOwned::Mining(MiningOwned::NewExtendedMiningJob(j))) => {
                Some(j.clone())
            }
            _ => None,
        })
        .expect("a job");
    assert_eq!(
        stats_events(&actions),
        vec![StatsEvent::ChannelOpened {
            conn: 1,
            channel_id
        }]
    );
    (channel_id, target, job)
}

#[test]
fn stats_events_report_the_downstream_its_channels_and_every_share() {
    let mut core = core();
    core.on_connect(1, LOCAL);
    let actions = core.on_message(1, setup_message(0b100));
    assert_eq!(
        stats_events(&actions),
        vec![StatsEvent::DownstreamConnected {
            conn: 1,
            flags: 0b100
        }]
    );
    core.on_new_template(template(1));
    core.on_set_new_prev_hash(prev(1, NEVER));
    let (first, target, job) = open_with_event(&mut core);
    let submit = |core: &mut PoolCore, share: SubmitSharesExtendedOwned| {
        stats_events(&core.on_message(
            1,
            AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(share)),
        ))
    };
    let shared = |accepted, work| StatsEvent::ShareSubmitted {
        conn: 1,
        channel_id: first,
        accepted,
        work,
    };

    // Accepted: the work of the target it met. Refused: none.
    let (good, _) = share(&core, first, &job, |h| h <= target);
    let work = ehash::work_hashes(target);
    assert!(work > 0);
    assert_eq!(submit(&mut core, good.clone()), vec![shared(true, work)]);
    assert_eq!(submit(&mut core, good.clone()), vec![shared(false, 0)]);
    let (weak, _) = share(&core, first, &job, |h| h > target);
    assert_eq!(submit(&mut core, weak), vec![shared(false, 0)]);
    let unknown = SubmitSharesExtendedOwned {
        channel_id: 99,
        ..good
    };
    assert_eq!(
        submit(&mut core, unknown),
        vec![StatsEvent::ShareSubmitted {
            conn: 1,
            channel_id: 99,
            accepted: false,
            work: 0
        }]
    );

    // Closed by the downstream, then by the disconnect.
    let close = core.on_message(
        1,
        AnyMessageOwned::Mining(MiningOwned::CloseChannel(CloseChannelOwned {
            channel_id: first,
            reason_code: str0255_truncated("bye"),
        })),
    );
    assert_eq!(
        stats_events(&close),
        vec![StatsEvent::ChannelClosed {
            conn: 1,
            channel_id: first
        }]
    );
    let (second, _, _) = open_with_event(&mut core);
    assert_eq!(
        stats_events(&core.on_disconnect(1)),
        vec![
            StatsEvent::ChannelClosed {
                conn: 1,
                channel_id: second
            },
            StatsEvent::DownstreamDisconnected { conn: 1 }
        ]
    );
    // A connection that never completed SetupConnection was never announced.
    core.on_connect(2, LOCAL);
    assert!(core.on_disconnect(2).is_empty());
}

#[test]
fn with_a_mint_no_channel_gets_a_target_worth_less_than_one_ehash() {
    let bits = UnitBits::new(16).unwrap();
    let easiest = ehash::easiest_target(bits);
    let mut core = core_with_a_mint(bits);
    // 10 H/s at 6 shares a minute would be 100 hashes a share.
    let (channel_id, _, target) = open_on_tip(&mut core, NEVER);
    assert_eq!(target, easiest);
    assert_eq!(ehash::ehash_amount(target, bits), 1);
    // A downstream declaring almost nothing, with no maximum of its own.
    on_message(
        &mut core,
        1,
        AnyMessageOwned::Mining(MiningOwned::UpdateChannel(UpdateChannelOwned {
            channel_id,
            nominal_hash_rate: 0.001,
            maximum_target: U256Owned::from([0xff; 32]),
        })),
    );
    assert_eq!(core.channels[&channel_id].target(), easiest);
    // An hour without shares: vardiff lowers the rate, not below the floor.
    for minute in 1..=60 {
        core.on_vardiff_tick(minute * 60_000);
    }
    assert_eq!(core.channels[&channel_id].target(), easiest);
}

#[test]
fn a_restarted_pool_gives_its_first_channel_a_new_extranonce_prefix() {
    let first_prefix = || {
        let mut core = core();
        let (channel_id, _, _) = open_on_tip(&mut core, NEVER);
        let c = core.channels[&channel_id].extended().unwrap();
        (
            c.get_extranonce_prefix().to_vec(),
            c.get_rollable_extranonce_size(),
        )
    };
    let (a, rollable) = first_prefix();
    let (b, _) = first_prefix();
    assert_ne!(a, b, "two pool processes, the same first prefix");
    assert!(rollable as usize >= MIN_ROLLABLE);
}
