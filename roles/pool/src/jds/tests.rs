//! The job declarator as a specification: what a client declares, what it
//! is asked for, what it is refused and why, and which custom jobs match.

use ehash::wire::str0255_truncated;
use ehash::LockingKey;
use stratum_core::binary_sv2::{B064KOwned, Seq0255Owned, Seq064KOwned, U256Owned};
use stratum_core::bitcoin::consensus::serialize;
use stratum_core::bitcoin::{
    absolute::LockTime, hashes::Hash, transaction, Amount, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxOut, Txid, Witness,
};
use stratum_core::channels_sv2::chain_tip::ChainTip;
use stratum_core::channels_sv2::server::jobs::factory::JobFactory;
use stratum_core::common_messages_sv2::Protocol;
use stratum_core::job_declaration_sv2::{
    AllocateMiningJobTokenOwned, DeclareMiningJobOwned, ProvideMissingTransactionsSuccessOwned,
};
use stratum_core::mining_sv2::SetCustomMiningJobOwned;
use stratum_core::parsers_sv2::{AnyMessageOwned, CommonMessagesOwned, JobDeclarationOwned};
use stratum_core::template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};

use super::held::{DECLARED_JOB_TTL_MS, MAX_DECLARED_JOBS};
use super::waiting::{
    MAX_PENDING_PER_CONNECTION, MAX_PENDING_WTXIDS, MAX_PENDING_WTXIDS_PER_CONNECTION,
    STALE_PENDING_KEPT,
};
use super::*;

/// The pool's clock, in ms: at the template's time.
const NOW: u64 = 1_800_000_000_000;
const KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
const OTHER_KEY: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";
const EXTRANONCE: usize = 16;

fn pool_script() -> ScriptBuf {
    ScriptBuf::from_bytes(vec![0x51])
}

fn key(hex: &str) -> LockingKey {
    hex.parse().unwrap()
}

fn faucet() -> TxOut {
    TxOut {
        value: Amount::from_sat(500),
        script_pubkey: ScriptBuf::from_bytes(vec![0x00, 0x14, 7, 7]),
    }
}

/// A mempool transaction (the declarator checks form, not coins).
fn tx(n: u8) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::from_byte_array([n; 32]), 0),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::from(vec![vec![n; 72], vec![2; 33]]),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(1000),
            script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
        }],
    }
}

/// The template at height 7 carrying `txs`, as a template provider sends it.
fn template(txs: &[Transaction]) -> (NewTemplateOwned, SetNewPrevHashOwned) {
    let outputs = [faucet(), witness_commitment(txs)];
    let txids: Vec<[u8; 32]> = txs
        .iter()
        .map(|t| t.compute_txid().to_byte_array())
        .collect();
    let template = NewTemplateOwned {
        template_id: 1,
        future_template: true,
        version: 0x2000_0000,
        coinbase_tx_version: 2,
        coinbase_prefix: vec![0x01, 0x07].try_into().unwrap(),
        coinbase_tx_input_sequence: u32::MAX,
        coinbase_tx_value_remaining: 5_000_000_000,
        coinbase_tx_outputs_count: 2,
        coinbase_tx_outputs: B064KOwned::new(outputs.iter().flat_map(serialize).collect()).unwrap(),
        coinbase_tx_locktime: 0,
        merkle_path: Seq0255Owned::new(
            ehash::coinbase::coinbase_merkle_path(&txids)
                .into_iter()
                .map(U256Owned::from)
                .collect(),
        )
        .unwrap(),
    };
    let prev = SetNewPrevHashOwned {
        template_id: 1,
        prev_hash: U256Owned::from([9u8; 32]),
        header_timestamp: 1_800_000_000,
        n_bits: 0x207f_ffff,
        target: U256Owned::from([0xffu8; 32]),
    };
    (template, prev)
}

/// The pool's tip moves to a new block, its template carrying `txs`.
fn new_tip(jds: &mut JobDeclarator, txs: &[Transaction]) {
    let (next, mut prev) = template(txs);
    prev.prev_hash = U256Owned::from([10u8; 32]);
    jds.on_tip(&prev, &next, NOW);
}

/// The template's witness commitment to `txs` (a coinbase's reserved value
/// is zeros, as SRI's job factory writes it).
fn witness_commitment(txs: &[Transaction]) -> TxOut {
    let wtxids: Vec<[u8; 32]> = txs
        .iter()
        .map(|tx| tx.compute_wtxid().to_byte_array())
        .collect();
    TxOut {
        value: Amount::ZERO,
        script_pubkey: ehash::coinbase::witness_commitment_script(&wtxids, &[0; 32]),
    }
}

fn pool_output(t: &NewTemplateOwned) -> TxOut {
    TxOut {
        value: Amount::from_sat(t.coinbase_tx_value_remaining),
        script_pubkey: pool_script(),
    }
}

/// A declarator on the template's tip, knowing `known` of its transactions.
fn declarator(txs: &[Transaction], known: &[Transaction]) -> (JobDeclarator, NewTemplateOwned) {
    let (t, p) = template(txs);
    let mut jds = JobDeclarator::new(pool_script(), true);
    jds.on_tip(&p, &t, NOW);
    jds.on_transactions(known.iter().map(Listed::of).collect());
    jds.on_connect(1);
    let reply = jds.on_message(1, setup(0b1), NOW);
    assert!(reply.close.is_none());
    (jds, t)
}

fn setup(flags: u32) -> AnyMessageOwned {
    let peer = "127.0.0.1:1".parse().unwrap();
    let m =
        roles_common::sv2::setup_connection(Protocol::JobDeclarationProtocol, flags, peer, "", "t");
    AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(m))
}

fn jd(m: JobDeclarationOwned) -> AnyMessageOwned {
    AnyMessageOwned::JobDeclaration(m)
}

fn only(reply: JdReply) -> JobDeclarationOwned {
    assert!(reply.close.is_none(), "closed: {:?}", reply.close);
    match <[AnyMessageOwned; 1]>::try_from(reply.messages) {
        Ok([AnyMessageOwned::JobDeclaration(m)]) => m,
        other => panic!("expected one job declaration message, got {other:?}"),
    }
}

fn allocate(jds: &mut JobDeclarator, conn: JdConnId) -> B0255Owned {
    allocate_with_outputs(jds, conn).0
}

/// A token and the coinbase outputs the declarator asks for with it.
fn allocate_with_outputs(jds: &mut JobDeclarator, conn: JdConnId) -> (B0255Owned, Vec<TxOut>) {
    let m = AllocateMiningJobTokenOwned {
        user_identifier: str0255_truncated("jdc"),
        request_id: 1,
    };
    match only(jds.on_message(
        conn,
        jd(JobDeclarationOwned::AllocateMiningJobToken(m)),
        NOW,
    )) {
        JobDeclarationOwned::AllocateMiningJobTokenSuccess(ok) => {
            let outputs: Vec<TxOut> =
                stratum_core::bitcoin::consensus::deserialize(ok.coinbase_outputs.as_bytes())
                    .unwrap();
            assert_eq!(outputs[0].script_pubkey, pool_script());
            (ok.mining_job_token, outputs)
        }
        other => panic!("{other:?}"),
    }
}

/// Each token comes with a number of its own after the pool's output, so
/// a client putting the token's outputs in its coinbase never declares one
/// template's headers twice.
#[test]
fn each_token_asks_for_a_number_of_its_own_in_the_coinbase() {
    let (mut jds, _) = declarator(&[], &[]);
    let (_, first) = allocate_with_outputs(&mut jds, 1);
    let (_, second) = allocate_with_outputs(&mut jds, 1);
    assert_eq!((first.len(), second.len()), (2, 2));
    for number in [&first[1], &second[1]] {
        assert_eq!(number.value, Amount::ZERO);
        assert!(number.script_pubkey.is_op_return(), "{number:?}");
    }
    assert_ne!(first[1], second[1]);
}

/// DeclareMiningJob for `t` with `outputs` before the template's, and `txs`.
fn declaration(
    token: B0255Owned,
    t: &NewTemplateOwned,
    outputs: Vec<TxOut>,
    txs: &[Transaction],
) -> DeclareMiningJobOwned {
    let factory = JobFactory::new(true, Some("jdc".into()), None);
    let (prefix, suffix) = factory
        .new_coinbase_tx_prefix_and_suffix(t.clone(), outputs, EXTRANONCE)
        .unwrap();
    DeclareMiningJobOwned {
        request_id: 7,
        mining_job_token: token,
        version: t.version,
        coinbase_tx_prefix: prefix.try_into().unwrap(),
        coinbase_tx_suffix: suffix.try_into().unwrap(),
        wtxid_list: Seq064KOwned::new(
            txs.iter()
                .map(|tx| U256Owned::from(tx.compute_wtxid().to_byte_array()))
                .collect(),
        )
        .unwrap(),
        excess_data: B064KOwned::new(vec![0; 32]).unwrap(),
    }
}

fn declare(jds: &mut JobDeclarator, m: DeclareMiningJobOwned) -> JobDeclarationOwned {
    only(jds.on_message(1, jd(JobDeclarationOwned::DeclareMiningJob(m)), NOW))
}

fn error_code(m: &JobDeclarationOwned) -> String {
    match m {
        JobDeclarationOwned::DeclareMiningJobError(e) => e.error_code.as_utf8_or_hex(),
        other => panic!("expected DeclareMiningJob.Error, got {other:?}"),
    }
}

/// A declared job's token (the whole template declared, all known).
fn declared(jds: &mut JobDeclarator, t: &NewTemplateOwned, txs: &[Transaction]) -> B0255Owned {
    let token = allocate(jds, 1);
    match declare(
        jds,
        declaration(token.clone(), t, vec![pool_output(t)], txs),
    ) {
        JobDeclarationOwned::DeclareMiningJobSuccess(ok) => {
            assert_ne!(
                ok.new_mining_job_token, token,
                "the declared job has a new token"
            );
            ok.new_mining_job_token
        }
        other => panic!("{other:?}"),
    }
}

/// SetCustomMiningJob of the declared job on `channel`, committing to `key`.
fn custom_job(
    token: B0255Owned,
    t: &NewTemplateOwned,
    channel: u32,
    key: Option<&LockingKey>,
) -> SetCustomMiningJobOwned {
    let mut outputs = vec![pool_output(t)];
    outputs.extend(key.map(ehash::coinbase::key_commitment_output));
    let (_, p) = template(&[]);
    JobFactory::new(true, Some("jdc".into()), None)
        .new_custom_job(
            channel,
            1,
            token,
            ChainTip::new(p.prev_hash, p.n_bits, p.header_timestamp),
            t.clone(),
            outputs,
            EXTRANONCE,
        )
        .unwrap()
}

/// What the pool does with SetCustomMiningJob: checked, then spent for the
/// channel that takes it.
fn set_job(
    jds: &mut JobDeclarator,
    m: &SetCustomMiningJobOwned,
    key: Option<&LockingKey>,
    now: u64,
) -> Result<(), CustomJobRefusal> {
    jds.check_custom_job(m, key, now)?;
    jds.custom_job_set(m.token.as_bytes(), m.channel_id);
    Ok(())
}

fn refusal(jds: &mut JobDeclarator, m: &SetCustomMiningJobOwned, key: &LockingKey) -> &'static str {
    set_job(jds, m, Some(key), NOW).unwrap_err().code
}

#[test]
fn a_job_of_known_transactions_is_declared_and_set_once_on_each_channel() {
    let txs = [tx(1), tx(2), tx(3)];
    let (mut jds, t) = declarator(&txs, &txs);
    let token = declared(&mut jds, &t, &txs);

    let (k1, k2) = (key(KEY), key(OTHER_KEY));
    let on_1 = custom_job(token.clone(), &t, 1, Some(&k1));
    assert_eq!(set_job(&mut jds, &on_1, Some(&k1), NOW), Ok(()));
    assert_eq!(refusal(&mut jds, &on_1, &k1), "invalid-mining-job-token");
    // Another channel (another miner key) mines the same declared job.
    let on_2 = custom_job(token, &t, 2, Some(&k2));
    assert_eq!(set_job(&mut jds, &on_2, Some(&k2), NOW), Ok(()));
}

#[test]
fn unknown_transactions_are_asked_for_and_must_be_the_ones_declared() {
    let txs = [tx(1), tx(2), tx(3)];
    let (mut jds, t) = declarator(&txs, &txs[..1]);
    let token = allocate(&mut jds, 1);
    let asked = declare(
        &mut jds,
        declaration(token, &t, vec![pool_output(&t)], &txs),
    );
    let JobDeclarationOwned::ProvideMissingTransactions(asked) = asked else {
        panic!("{asked:?}")
    };
    assert_eq!(asked.unknown_tx_position_list.into_inner(), vec![1, 2]);

    let provide = |list: Vec<Transaction>| {
        jd(JobDeclarationOwned::ProvideMissingTransactionsSuccess(
            ProvideMissingTransactionsSuccessOwned {
                request_id: 7,
                transaction_list: Seq064KOwned::new(
                    list.iter()
                        .map(|t| serialize(t).try_into().unwrap())
                        .collect(),
                )
                .unwrap(),
            },
        ))
    };
    // A transaction that is not the declared one.
    let wrong = only(jds.on_message(1, provide(vec![tx(2), tx(4)]), NOW));
    assert_eq!(error_code(&wrong), "invalid-job");

    let token = allocate(&mut jds, 1);
    declare(
        &mut jds,
        declaration(token, &t, vec![pool_output(&t)], &txs),
    );
    let ok = only(jds.on_message(1, provide(vec![tx(2), tx(3)]), NOW));
    assert!(
        matches!(ok, JobDeclarationOwned::DeclareMiningJobSuccess(_)),
        "{ok:?}"
    );
    // Kept only for that declaration: the next one asks for them again,
    // so what clients send holds no memory.
    assert_eq!(jds.known_transactions(), 1);
    let token = allocate(&mut jds, 1);
    let again = declare(
        &mut jds,
        declaration(token, &t, vec![pool_output(&t)], &txs),
    );
    let JobDeclarationOwned::ProvideMissingTransactions(asked) = again else {
        panic!("{again:?}")
    };
    assert_eq!(asked.unknown_tx_position_list.into_inner(), vec![1, 2]);
}

/// A declaration waiting for its transactions when the tip moves is
/// dropped (with what it holds); its transactions, if they come (after
/// another tip too: a large upload), are answered stale.
#[test]
fn a_declaration_waiting_for_transactions_goes_when_the_tip_moves() {
    let txs = [tx(1), tx(2)];
    let (mut jds, t) = declarator(&txs, &[]);
    let token = allocate(&mut jds, 1);
    let asked = declare(
        &mut jds,
        declaration(token, &t, vec![pool_output(&t)], &txs),
    );
    assert!(matches!(
        asked,
        JobDeclarationOwned::ProvideMissingTransactions(_)
    ));
    new_tip(&mut jds, &txs);
    assert!(jds.connections[&1].pending.is_empty());
    let (next, mut prev) = template(&txs);
    prev.prev_hash = U256Owned::from([11u8; 32]);
    jds.on_tip(&prev, &next, NOW);
    let late = ProvideMissingTransactionsSuccessOwned {
        request_id: 7,
        transaction_list: Seq064KOwned::new(
            txs.iter()
                .map(|t| serialize(t).try_into().unwrap())
                .collect(),
        )
        .unwrap(),
    };
    let reply = jds.on_message(
        1,
        jd(JobDeclarationOwned::ProvideMissingTransactionsSuccess(late)),
        NOW,
    );
    assert!(reply.close.is_none());
    assert_eq!(error_code(&only(reply)), "stale-chain-tip");
}

#[test]
fn declarations_are_refused_with_the_reason_and_the_connection_survives() {
    let txs = [tx(1)];
    let (mut jds, t) = declarator(&txs, &txs);

    // An unknown token, and a token declared twice.
    let unknown = B0255Owned::new(42u64.to_le_bytes().to_vec()).unwrap();
    let refused = declare(
        &mut jds,
        declaration(unknown, &t, vec![pool_output(&t)], &txs),
    );
    assert_eq!(error_code(&refused), "invalid-mining-job-token");
    let token = allocate(&mut jds, 1);
    declare(
        &mut jds,
        declaration(token.clone(), &t, vec![pool_output(&t)], &txs),
    );
    let reused = declare(
        &mut jds,
        declaration(token, &t, vec![pool_output(&t)], &txs),
    );
    assert_eq!(error_code(&reused), "invalid-mining-job-token");

    // Another connection's token.
    jds.on_connect(2);
    jds.on_message(2, setup(0b1), NOW);
    let theirs = allocate(&mut jds, 2);
    let refused = declare(
        &mut jds,
        declaration(theirs, &t, vec![pool_output(&t)], &txs),
    );
    assert_eq!(error_code(&refused), "invalid-mining-job-token");

    // A coinbase paying someone else.
    let thief = TxOut {
        value: Amount::from_sat(t.coinbase_tx_value_remaining),
        script_pubkey: ScriptBuf::from_bytes(vec![0x52]),
    };
    let token = allocate(&mut jds, 1);
    let refused = declare(&mut jds, declaration(token, &t, vec![thief], &txs));
    assert_eq!(error_code(&refused), "invalid-coinbase-tx");

    // A coinbase for an older height: the client's tip is behind the pool's.
    let mut elsewhere = t.clone();
    elsewhere.coinbase_prefix = vec![0x01, 0x05].try_into().unwrap();
    let token = allocate(&mut jds, 1);
    let refused = declare(
        &mut jds,
        declaration(token, &elsewhere, vec![pool_output(&t)], &txs),
    );
    assert_eq!(error_code(&refused), "stale-chain-tip");

    // The same transaction twice.
    let token = allocate(&mut jds, 1);
    let refused = declare(
        &mut jds,
        declaration(token, &t, vec![pool_output(&t)], &[tx(1), tx(1)]),
    );
    assert_eq!(error_code(&refused), "invalid-job");

    // After all that, the connection still declares.
    declared(&mut jds, &t, &txs);
}

#[test]
fn a_client_that_skips_setup_is_closed() {
    let mut jds = JobDeclarator::new(pool_script(), true);
    jds.on_connect(2);
    let m = AllocateMiningJobTokenOwned {
        user_identifier: str0255_truncated("jdc"),
        request_id: 1,
    };
    let reply = jds.on_message(2, jd(JobDeclarationOwned::AllocateMiningJobToken(m)), NOW);
    assert!(reply.close.unwrap().contains("before SetupConnection"));
}

#[test]
fn a_coinbase_only_client_sets_its_tokens_directly_paying_the_pool_on_its_tip() {
    let txs = [tx(1)];
    let (t, p) = template(&txs);
    let mut jds = JobDeclarator::new(pool_script(), true);
    jds.on_tip(&p, &t, NOW);
    jds.on_connect(1);
    assert!(jds.on_message(1, setup(0), NOW).close.is_none());
    let token = allocate(&mut jds, 1);
    // It declares nothing.
    let refused = declare(
        &mut jds,
        declaration(token.clone(), &t, vec![pool_output(&t)], &txs),
    );
    assert_eq!(error_code(&refused), "invalid-job");

    let k = key(KEY);
    let good = custom_job(token.clone(), &t, 1, Some(&k));
    let mut m = good.clone();
    m.prev_hash = U256Owned::from([8u8; 32]);
    assert_eq!(refusal(&mut jds, &m, &k), "stale-chain-tip");
    let other = custom_job(token.clone(), &t, 1, Some(&key(OTHER_KEY)));
    assert_eq!(refusal(&mut jds, &other, &k), "invalid-coinbase-tx-outputs");
    let mut thief = good.clone();
    let mut outputs: Vec<TxOut> =
        stratum_core::bitcoin::consensus::deserialize(thief.coinbase_tx_outputs.as_bytes())
            .unwrap();
    outputs[0].script_pubkey = ScriptBuf::from_bytes(vec![0x52]);
    thief.coinbase_tx_outputs = serialize(&outputs).try_into().unwrap();
    assert_eq!(refusal(&mut jds, &thief, &k), "invalid-coinbase-tx-outputs");
    let mut next_height = good.clone();
    next_height.coinbase_prefix = vec![0x01, 0x08].try_into().unwrap();
    assert_eq!(
        refusal(&mut jds, &next_height, &k),
        "invalid-coinbase-prefix"
    );

    assert_eq!(set_job(&mut jds, &good, Some(&k), NOW), Ok(()));
    assert_eq!(refusal(&mut jds, &good, &k), "invalid-mining-job-token");
    // Its tokens go with its connection.
    jds.on_disconnect(1);
    let again = custom_job(token, &t, 2, Some(&k));
    assert_eq!(refusal(&mut jds, &again, &k), "invalid-mining-job-token");
}

/// A job is declared once its merkle path is built, outside the lock: if
/// the tip moved meanwhile it is stale, and if its client left, nothing.
#[test]
fn an_accepted_job_is_declared_on_the_tip_it_was_accepted_on_while_its_client_is_there() {
    let txs = [tx(1), tx(2)];
    let (mut jds, t) = declarator(&txs, &txs);
    let accept = |jds: &mut JobDeclarator| {
        let token = allocate(jds, 1);
        let m = declaration(token, &t, vec![pool_output(&t)], &txs);
        let reply = jds.on_prepared(
            1,
            prepare(jd(JobDeclarationOwned::DeclareMiningJob(m))),
            NOW,
        );
        assert!(reply.messages.is_empty() && reply.close.is_none());
        reply.accepted.expect("every transaction known")
    };
    let accepted = accept(&mut jds);
    let merkle_path = accepted.merkle_path();
    assert_eq!(
        merkle_path,
        ehash::coinbase::coinbase_merkle_path(
            &txs.iter()
                .map(|tx| tx.compute_txid().to_byte_array())
                .collect::<Vec<_>>()
        )
    );
    let declared = jds.finish(accepted, merkle_path.clone(), NOW);
    assert!(matches!(
        only(declared),
        JobDeclarationOwned::DeclareMiningJobSuccess(_)
    ));

    let accepted = accept(&mut jds);
    new_tip(&mut jds, &txs);
    let stale = jds.finish(accepted, merkle_path.clone(), NOW);
    assert_eq!(error_code(&only(stale)), "stale-chain-tip");

    let accepted = accept(&mut jds);
    let declared_before = jds.declared.len();
    jds.on_disconnect(1);
    let gone = jds.finish(accepted, merkle_path, NOW);
    assert!(gone.messages.is_empty());
    assert_eq!(jds.declared.len(), declared_before);
}

#[test]
fn a_pool_may_take_no_coinbase_only_clients() {
    let mut jds = JobDeclarator::new(pool_script(), false);
    jds.on_connect(1);
    let reply = jds.on_message(1, setup(0), NOW);
    let Some(AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(e))) =
        reply.messages.first()
    else {
        panic!("expected SetupConnection.Error, got {:?}", reply.messages)
    };
    assert_eq!(
        e.error_code.as_utf8_or_hex(),
        "missing-declare-tx-data-flag"
    );
    assert!(reply.close.unwrap().contains("DECLARE_TX_DATA"));
    // A full-template client is set up.
    jds.on_connect(2);
    let reply = jds.on_message(2, setup(0b1), NOW);
    assert!(reply.close.is_none());
    assert!(matches!(
        reply.messages.as_slice(),
        [AnyMessageOwned::Common(
            CommonMessagesOwned::SetupConnectionSuccess(_)
        )]
    ));
}

/// A coinbase-only client takes a token per job: a token set on a channel
/// is used (it no longer counts against the 64 allocated and unused), good
/// on the client's other channels (and again on a renewed one) while it is
/// among the latest its connection set.
#[test]
fn a_coinbase_only_client_uses_a_token_per_job_for_as_long_as_it_mines() {
    let (t, p) = template(&[]);
    let mut jds = JobDeclarator::new(pool_script(), true);
    jds.on_tip(&p, &t, NOW);
    jds.on_connect(1);
    assert!(jds.on_message(1, setup(0), NOW).close.is_none());
    let k = key(KEY);
    let mut tokens = vec![];
    for n in 0..MAX_DECLARED_PER_CONNECTION as u64 + 1 {
        let token = allocate(&mut jds, 1);
        let m = custom_job(token.clone(), &t, 1, Some(&k));
        assert_eq!(set_job(&mut jds, &m, Some(&k), NOW + n), Ok(()));
        tokens.push(token);
    }
    assert_eq!(jds.coinbase_only.len(), MAX_DECLARED_PER_CONNECTION);
    let later = NOW + 10 * DECLARED_JOB_TTL_MS;
    let oldest = custom_job(tokens[0].clone(), &t, 2, Some(&k));
    let refused = set_job(&mut jds, &oldest, Some(&k), later);
    assert_eq!(refused.unwrap_err().code, "invalid-mining-job-token");
    let kept = custom_job(tokens[1].clone(), &t, 2, Some(&k));
    assert_eq!(set_job(&mut jds, &kept, Some(&k), later), Ok(()));
    let again = custom_job(tokens[1].clone(), &t, 2, Some(&k));
    let refused = set_job(&mut jds, &again, Some(&k), later);
    assert_eq!(refused.unwrap_err().code, "invalid-mining-job-token");
    jds.on_channel_renewed(2);
    assert_eq!(set_job(&mut jds, &again, Some(&k), later), Ok(()));

    // Tokens allocated and never set are still bounded.
    for _ in 0..64 {
        allocate(&mut jds, 1);
    }
    let m = AllocateMiningJobTokenOwned {
        user_identifier: str0255_truncated("jdc"),
        request_id: 1,
    };
    let reply = jds.on_message(1, jd(JobDeclarationOwned::AllocateMiningJobToken(m)), NOW);
    assert!(reply.close.unwrap().contains("64 job tokens"));
}

/// A declared job set on a channel outlives its 60 s while its tip lasts:
/// the client sets it again on the channel once the pool renews it.
#[test]
fn a_declared_job_in_use_is_set_again_on_a_renewed_channel() {
    let txs = [tx(1)];
    let (mut jds, t) = declarator(&txs, &txs);
    let token = declared(&mut jds, &t, &txs);
    let k = key(KEY);
    let m = custom_job(token, &t, 1, Some(&k));
    assert_eq!(set_job(&mut jds, &m, Some(&k), NOW), Ok(()));
    let later = NOW + 10 * DECLARED_JOB_TTL_MS;
    let refused = set_job(&mut jds, &m, Some(&k), later);
    assert_eq!(refused.unwrap_err().code, "invalid-mining-job-token");
    jds.on_channel_renewed(1);
    assert_eq!(set_job(&mut jds, &m, Some(&k), later), Ok(()));
    // Unused, a declared job still goes after its 60 s.
    let unused = declared(&mut jds, &t, &txs);
    let m = custom_job(unused, &t, 1, Some(&k));
    let refused = set_job(&mut jds, &m, Some(&k), later + DECLARED_JOB_TTL_MS);
    assert_eq!(refused.unwrap_err().code, "invalid-mining-job-token");
    // A connection gone leaves none of the jobs it set behind.
    assert_eq!(jds.declared.len(), 1);
    jds.on_disconnect(1);
    assert!(jds.declared.is_empty());
}

#[test]
fn a_custom_job_must_be_the_declared_one_on_the_pool_s_tip() {
    let txs = [tx(1), tx(2)];
    let (mut jds, t) = declarator(&txs, &txs);
    let token = declared(&mut jds, &t, &txs);
    let k = key(KEY);
    let good = custom_job(token.clone(), &t, 1, Some(&k));

    let mut m = good.clone();
    m.prev_hash = U256Owned::from([8u8; 32]);
    assert_eq!(refusal(&mut jds, &m, &k), "stale-chain-tip");
    let mut m = good.clone();
    m.nbits = 0x1d00_ffff;
    assert_eq!(refusal(&mut jds, &m, &k), "invalid-nbits");
    let mut m = good.clone();
    m.min_ntime -= custom_job::MIN_NTIME_SLACK_SECS + 1;
    assert_eq!(refusal(&mut jds, &m, &k), "invalid-min-ntime");
    // Another template provider's clock may be a little behind the pool's.
    let other_job = declared(&mut jds, &t, &txs);
    let mut m = custom_job(other_job, &t, 1, Some(&k));
    m.min_ntime -= custom_job::MIN_NTIME_SLACK_SECS;
    assert_eq!(set_job(&mut jds, &m, Some(&k), NOW), Ok(()));
    // Nor later than the pool's clock allows: its shares would be past the
    // two hours ahead of the clock a block (and the mint's quote) may be.
    let mut m = good.clone();
    m.min_ntime = (NOW / 1000) as u32 + custom_job::MIN_NTIME_SLACK_SECS + 1;
    assert_eq!(refusal(&mut jds, &m, &k), "invalid-min-ntime");
    let ahead_job = declared(&mut jds, &t, &txs);
    let mut m = custom_job(ahead_job, &t, 1, Some(&k));
    m.min_ntime = (NOW / 1000) as u32 + custom_job::MIN_NTIME_SLACK_SECS;
    assert_eq!(set_job(&mut jds, &m, Some(&k), NOW), Ok(()));
    // A chain faster than a block a second runs ahead of the clock: its
    // tip's time counts as now.
    let fast_chain_job = declared(&mut jds, &t, &txs);
    let m = custom_job(fast_chain_job, &t, 1, Some(&k));
    let behind = NOW - 3_600_000;
    assert_eq!(set_job(&mut jds, &m, Some(&k), behind), Ok(()));
    let mut m = good.clone();
    m.version ^= 1;
    assert_eq!(refusal(&mut jds, &m, &k), "invalid-version");
    let mut m = good.clone();
    m.coinbase_prefix = vec![0x01, 0x07, 0x00].try_into().unwrap();
    assert_eq!(refusal(&mut jds, &m, &k), "invalid-coinbase-prefix");
    // A prefix cut short of the height: a block on it would be invalid.
    for cut in [vec![], vec![0x01]] {
        let mut m = good.clone();
        m.coinbase_prefix = cut.try_into().unwrap();
        assert_eq!(refusal(&mut jds, &m, &k), "invalid-coinbase-prefix");
    }
    let mut m = good.clone();
    m.merkle_path = Seq0255Owned::new(vec![U256Owned::from([1u8; 32])]).unwrap();
    assert_eq!(refusal(&mut jds, &m, &k), "invalid-merkle-path");
    // No commitment to the channel's key, or a commitment to another key.
    let none = custom_job(token.clone(), &t, 1, None);
    assert_eq!(refusal(&mut jds, &none, &k), "invalid-coinbase-tx-outputs");
    let other = custom_job(token.clone(), &t, 1, Some(&key(OTHER_KEY)));
    assert_eq!(refusal(&mut jds, &other, &k), "invalid-coinbase-tx-outputs");
    // Paying the pool less than declared.
    let mut m = good.clone();
    let mut outputs: Vec<TxOut> =
        stratum_core::bitcoin::consensus::deserialize(m.coinbase_tx_outputs.as_bytes()).unwrap();
    outputs[0].value = Amount::from_sat(1);
    m.coinbase_tx_outputs = serialize(&outputs).try_into().unwrap();
    assert_eq!(refusal(&mut jds, &m, &k), "invalid-coinbase-tx-outputs");

    // Expired, then (declared again) stale once the tip moves.
    assert_eq!(
        set_job(&mut jds, &good, Some(&k), NOW + DECLARED_JOB_TTL_MS)
            .unwrap_err()
            .code,
        "invalid-mining-job-token"
    );
    let token = declared(&mut jds, &t, &txs);
    let good = custom_job(token, &t, 1, Some(&k));
    new_tip(&mut jds, &txs);
    assert_eq!(refusal(&mut jds, &good, &k), "stale-chain-tip");
}

/// A custom job passes the declarator's checks before its channel takes it;
/// one its channel refuses spends nothing, so the client may correct it.
#[test]
fn a_custom_job_spends_its_token_only_once_its_channel_takes_it() {
    let txs = [tx(1)];
    let (mut jds, t) = declarator(&txs, &txs);
    let k = key(KEY);
    let declared_job = custom_job(declared(&mut jds, &t, &txs), &t, 1, Some(&k));

    jds.on_connect(2);
    assert!(jds.on_message(2, setup(0), NOW).close.is_none());
    let coinbase_only = custom_job(allocate(&mut jds, 2), &t, 1, Some(&k));

    for m in [declared_job, coinbase_only] {
        assert_eq!(jds.check_custom_job(&m, Some(&k), NOW), Ok(()));
        assert_eq!(
            jds.check_custom_job(&m, Some(&k), NOW),
            Ok(()),
            "checked, not spent"
        );
        jds.custom_job_set(m.token.as_bytes(), m.channel_id);
        assert_eq!(refusal(&mut jds, &m, &k), "invalid-mining-job-token");
    }
}

/// The pool holds a bounded number of declared jobs, of all connections:
/// when full, the oldest one not set on a channel goes; with every one set
/// on a channel, a declaration is refused.
#[test]
fn the_pool_holds_a_bounded_number_of_declared_jobs() {
    let txs = [tx(1)];
    let (mut jds, t) = declarator(&txs, &txs);
    let k = key(KEY);
    let set = declared(&mut jds, &t, &txs);
    set_job(
        &mut jds,
        &custom_job(set.clone(), &t, 1, Some(&k)),
        Some(&k),
        NOW,
    )
    .unwrap();
    let oldest_unused = declared(&mut jds, &t, &txs);
    // Other connections' later jobs fill the pool.
    let token = parse_token(oldest_unused.as_bytes()).unwrap();
    let like = jds.declared[&token].clone();
    for n in 0..(MAX_DECLARED_JOBS - 2) as u64 {
        let mut job = like.clone();
        job.owner = 100 + n / MAX_DECLARED_PER_CONNECTION as u64;
        job.expires_ms += 1 + n;
        jds.declared.insert(u64::MAX - n, job);
    }

    let newest = declared(&mut jds, &t, &txs);
    assert_eq!(jds.declared.len(), MAX_DECLARED_JOBS);
    let gone = custom_job(oldest_unused, &t, 2, Some(&k));
    assert_eq!(refusal(&mut jds, &gone, &k), "invalid-mining-job-token");
    for (token, channel) in [(newest, 2), (set, 3)] {
        let m = custom_job(token, &t, channel, Some(&k));
        assert_eq!(set_job(&mut jds, &m, Some(&k), NOW), Ok(()));
    }

    for job in jds.declared.values_mut() {
        job.used = true;
    }
    let token = allocate(&mut jds, 1);
    let refused = declare(
        &mut jds,
        declaration(token, &t, vec![pool_output(&t)], &txs),
    );
    assert_eq!(error_code(&refused), "invalid-job");
    assert_eq!(jds.declared.len(), MAX_DECLARED_JOBS);

    // A job of the previous tip, set on a channel or not, goes first.
    let previous_tip = *jds.declared.keys().next().unwrap();
    jds.declared.get_mut(&previous_tip).unwrap().tip_seq -= 1;
    declared(&mut jds, &t, &txs);
    assert!(!jds.declared.contains_key(&previous_tip));
    assert_eq!(jds.declared.len(), MAX_DECLARED_JOBS);
}

/// Declarations waiting for their transactions list a bounded number of
/// them, per connection and in all: one more is refused, and the
/// connection goes on.
#[test]
fn declarations_waiting_for_transactions_list_a_bounded_number_of_them() {
    let (mut jds, t) = declarator(&[], &[]);
    let mut next_wtxid = 0u64;
    let mut declare_unknown = |jds: &mut JobDeclarator, conn: JdConnId, request_id: u32| {
        let wtxids: Vec<[u8; 32]> = (0..MAX_DECLARED_TXS)
            .map(|_| {
                next_wtxid += 1;
                let mut wtxid = [0xee; 32];
                wtxid[..8].copy_from_slice(&next_wtxid.to_le_bytes());
                wtxid
            })
            .collect();
        // The client's template commits to them.
        let commitment = TxOut {
            value: Amount::ZERO,
            script_pubkey: ehash::coinbase::witness_commitment_script(&wtxids, &[0; 32]),
        };
        let outputs = [faucet(), commitment];
        let mut theirs = t.clone();
        theirs.coinbase_tx_outputs =
            B064KOwned::new(outputs.iter().flat_map(serialize).collect()).unwrap();
        let mut m = declaration(allocate(jds, conn), &theirs, vec![pool_output(&t)], &[]);
        m.request_id = request_id;
        m.wtxid_list =
            Seq064KOwned::new(wtxids.into_iter().map(U256Owned::from).collect()).unwrap();
        only(jds.on_message(conn, jd(JobDeclarationOwned::DeclareMiningJob(m)), NOW))
    };
    let asked =
        |m: &JobDeclarationOwned| matches!(m, JobDeclarationOwned::ProvideMissingTransactions(_));

    let per_connection = MAX_PENDING_WTXIDS_PER_CONNECTION / MAX_DECLARED_TXS;
    for request_id in 0..per_connection as u32 {
        assert!(asked(&declare_unknown(&mut jds, 1, request_id)));
    }
    let refused = declare_unknown(&mut jds, 1, 99);
    assert_eq!(error_code(&refused), "invalid-job");

    let connections = MAX_PENDING_WTXIDS / MAX_PENDING_WTXIDS_PER_CONNECTION;
    for conn in 2..=connections as JdConnId {
        jds.on_connect(conn);
        assert!(jds.on_message(conn, setup(0b1), NOW).close.is_none());
        for request_id in 0..per_connection as u32 {
            assert!(asked(&declare_unknown(&mut jds, conn, request_id)));
        }
    }
    // The pool holds its most: a newcomer is asked for its transactions,
    // and a connection listing the most gives way.
    let last = connections as JdConnId + 1;
    jds.on_connect(last);
    assert!(jds.on_message(last, setup(0b1), NOW).close.is_none());
    assert!(asked(&declare_unknown(&mut jds, last, 1)));
    let listed: usize = jds.connections.values().map(JdConnection::listed).sum();
    assert_eq!(listed, MAX_PENDING_WTXIDS);
    let gave_way = (jds.connections.iter()).find(|(_, c)| !c.stale_pending.is_empty());
    let (&gave_way, state) = gave_way.expect("one connection gave a declaration up");
    assert_eq!(state.pending.len(), per_connection - 1);
    let (dropped, _) = state.stale_pending[0];
    let late = ProvideMissingTransactionsSuccessOwned {
        request_id: dropped,
        transaction_list: Seq064KOwned::new(vec![]).unwrap(),
    };
    let late = jd(JobDeclarationOwned::ProvideMissingTransactionsSuccess(late));
    let answer = only(jds.on_message(gave_way, late, NOW));
    assert_eq!(error_code(&answer), "invalid-job");
}

/// A block's coinbase commits to its transactions' witnesses (BIP141): a
/// declaration whose commitment is for other transactions, or that has
/// none while a transaction (or the coinbase) has a witness, is refused:
/// no share on it could be a block.
#[test]
fn a_declared_coinbase_commits_to_the_declared_transactions_witnesses() {
    let txs = [tx(1), tx(2)];
    let (mut jds, t) = declarator(&txs, &txs);
    let token = allocate(&mut jds, 1);
    let swapped = declaration(token, &t, vec![pool_output(&t)], &[tx(2), tx(1)]);
    assert_eq!(
        error_code(&declare(&mut jds, swapped)),
        "invalid-coinbase-tx"
    );

    let mut bare = t.clone();
    bare.coinbase_tx_outputs = B064KOwned::new(serialize(&faucet())).unwrap();
    bare.coinbase_tx_outputs_count = 1;
    let token = allocate(&mut jds, 1);
    let with_witness = declaration(token, &bare, vec![pool_output(&t)], &txs);
    assert_eq!(
        error_code(&declare(&mut jds, with_witness)),
        "invalid-coinbase-tx"
    );
    // Without the coinbase's witness too: the transactions' still need one.
    let token = allocate(&mut jds, 1);
    let mut m = declaration(token, &bare, vec![pool_output(&t)], &txs);
    let mut coinbase = coinbase::rebuild(
        m.coinbase_tx_prefix.as_bytes(),
        m.coinbase_tx_suffix.as_bytes(),
    )
    .unwrap();
    coinbase.input[0].witness.clear();
    let bytes = serialize(&coinbase);
    let at = m.coinbase_tx_prefix.as_bytes().len() - 2; // no segwit marker and flag
    m.coinbase_tx_prefix = bytes[..at].to_vec().try_into().unwrap();
    m.coinbase_tx_suffix = bytes[at + EXTRANONCE..].to_vec().try_into().unwrap();
    assert_eq!(error_code(&declare(&mut jds, m)), "invalid-job");
}

/// A new template provider link starts with the tip the pool already had:
/// the jobs declared on it stay good.
#[test]
fn the_same_tip_again_keeps_the_jobs_declared_on_it() {
    let txs = [tx(1), tx(2)];
    let (mut jds, t) = declarator(&txs, &txs);
    let token = declared(&mut jds, &t, &txs);
    let k = key(KEY);
    let job = custom_job(token, &t, 1, Some(&k));
    let (again, prev) = template(&txs);
    jds.on_tip(&prev, &again, NOW);
    assert_eq!(set_job(&mut jds, &job, Some(&k), NOW), Ok(()));
}

#[test]
fn a_declaration_one_block_ahead_waits_for_the_pool_s_tip() {
    let txs = [tx(1)];
    let (mut jds, t) = declarator(&txs, &txs);
    // The client's template provider already moved to height 8.
    let (mut ahead, mut prev) = template(&txs);
    ahead.coinbase_prefix = vec![0x01, 0x08].try_into().unwrap();
    ahead.template_id = 2;
    prev.template_id = 2;
    prev.prev_hash = U256Owned::from([10u8; 32]);
    let token = allocate(&mut jds, 1);
    let m = declaration(token, &ahead, vec![pool_output(&ahead)], &txs);
    let reply = jds.on_message(1, jd(JobDeclarationOwned::DeclareMiningJob(m)), NOW);
    assert!(reply.messages.is_empty() && reply.close.is_none(), "parked");
    // The pool's tip moves there too: the declaration is accepted, and
    // declared once its merkle path is built (by its link, unlocked).
    let mut answers = jds.on_tip(&prev, &ahead, NOW + 10);
    let Some((1, JdLate::Accepted(accepted))) = answers.pop() else {
        panic!("{answers:?}")
    };
    assert!(answers.is_empty(), "{answers:?}");
    let merkle_path = accepted.merkle_path();
    let declared = jds.finish(accepted, merkle_path, NOW + 10);
    assert!(matches!(
        only(declared),
        JobDeclarationOwned::DeclareMiningJobSuccess(_)
    ));

    // One that waits too long is refused as stale with the next message.
    let mut further = ahead.clone();
    further.coinbase_prefix = vec![0x01, 0x09].try_into().unwrap();
    let token = allocate(&mut jds, 1);
    let m = declaration(token, &further, vec![pool_output(&t)], &txs);
    assert!(jds
        .on_message(1, jd(JobDeclarationOwned::DeclareMiningJob(m)), NOW)
        .messages
        .is_empty());
    let later = AllocateMiningJobTokenOwned {
        user_identifier: str0255_truncated("jdc"),
        request_id: 2,
    };
    let reply = jds.on_message(
        1,
        jd(JobDeclarationOwned::AllocateMiningJobToken(later)),
        NOW + PARKED_MS,
    );
    assert_eq!(reply.messages.len(), 2);
    assert!(matches!(
        &reply.messages[0],
        AnyMessageOwned::JobDeclaration(JobDeclarationOwned::DeclareMiningJobError(e))
            if e.error_code.as_utf8_or_hex() == "stale-chain-tip"
    ));
    // Its token is used up: only the one just allocated is held.
    assert_eq!(jds.connections[&1].allocated.len(), 1);
}

/// A client that waits quietly for the answer to its parked declaration
/// gets it from the link's timer once its time is up, and once.
#[test]
fn a_parked_declaration_of_a_quiet_client_is_refused_when_its_time_is_up() {
    let txs = [tx(1)];
    let (mut jds, t) = declarator(&txs, &txs);
    let mut ahead = t.clone();
    ahead.coinbase_prefix = vec![0x01, 0x08].try_into().unwrap();
    let token = allocate(&mut jds, 1);
    let m = declaration(token, &ahead, vec![pool_output(&ahead)], &txs);
    let reply = jds.on_message(1, jd(JobDeclarationOwned::DeclareMiningJob(m)), NOW);
    assert!(reply.messages.is_empty(), "parked");
    assert!(jds.expire_parked(1, NOW + PARKED_MS - 1).is_empty());
    let stale = jds.expire_parked(1, NOW + PARKED_MS);
    assert_eq!(stale.len(), 1);
    assert!(matches!(
        &stale[0],
        AnyMessageOwned::JobDeclaration(JobDeclarationOwned::DeclareMiningJobError(e))
            if e.error_code.as_utf8_or_hex() == "stale-chain-tip"
    ));
    assert!(jds.expire_parked(1, NOW + PARKED_MS * 2).is_empty(), "once");
}

/// Only a declaration with a token of its own connection waits for the
/// pool's tip: one with any other is refused at once.
#[test]
fn a_declaration_ahead_with_a_bad_token_is_refused_not_parked() {
    let txs = [tx(1)];
    let (mut jds, _) = declarator(&txs, &txs);
    let (mut ahead, _) = template(&txs);
    ahead.coinbase_prefix = vec![0x01, 0x08].try_into().unwrap();
    let stranger = B0255Owned::new(99u64.to_le_bytes().to_vec()).unwrap();
    let m = declaration(stranger, &ahead, vec![pool_output(&ahead)], &txs);
    let refused = only(jds.on_message(1, jd(JobDeclarationOwned::DeclareMiningJob(m)), NOW));
    assert_eq!(error_code(&refused), "invalid-mining-job-token");
    assert!(jds.parked.is_empty());
}

/// One connection cannot take every parking slot: its declarations past
/// its share are answered at once, and another's still wait.
#[test]
fn a_connection_parks_a_few_declarations_at_most() {
    let txs = [tx(1)];
    let (mut jds, t) = declarator(&txs, &txs);
    jds.on_connect(2);
    assert!(jds.on_message(2, setup(0b1), NOW).close.is_none());
    let mut ahead = t.clone();
    ahead.coinbase_prefix = vec![0x01, 0x08].try_into().unwrap();
    let park = |jds: &mut JobDeclarator, conn| {
        let token = allocate(jds, conn);
        let m = declaration(token, &ahead, vec![pool_output(&ahead)], &txs);
        jds.on_message(conn, jd(JobDeclarationOwned::DeclareMiningJob(m)), NOW)
    };
    for _ in 0..MAX_PARKED_PER_CONNECTION {
        assert!(park(&mut jds, 1).messages.is_empty(), "parked");
    }
    assert_eq!(error_code(&only(park(&mut jds, 1))), "stale-chain-tip");
    assert!(park(&mut jds, 2).messages.is_empty(), "another's parked");
}

#[test]
fn a_connection_holds_a_bounded_number_of_declared_jobs_the_oldest_go_first() {
    let txs = [tx(1)];
    let (mut jds, t) = declarator(&txs, &txs);
    let first = declared(&mut jds, &t, &txs);
    for _ in 0..MAX_DECLARED_PER_CONNECTION {
        declared(&mut jds, &t, &txs);
    }
    let k = key(KEY);
    let m = custom_job(first, &t, 1, Some(&k));
    assert_eq!(refusal(&mut jds, &m, &k), "invalid-mining-job-token");
    assert_eq!(jds.declared.len(), MAX_DECLARED_PER_CONNECTION);
}

/// No header of a version below 4 (or with its top bit set, negative) can
/// be a block: a job of one is refused, declared that way or coinbase-only.
#[test]
fn a_job_whose_blocks_could_not_be_valid_for_their_version_is_refused() {
    let txs = [tx(1)];
    let k = key(KEY);
    let (mut jds, t) = declarator(&txs, &txs);
    for version in [3, 0x8000_0000] {
        let token = allocate(&mut jds, 1);
        let mut d = declaration(token, &t, vec![pool_output(&t)], &txs);
        d.version = version;
        let JobDeclarationOwned::DeclareMiningJobSuccess(ok) = declare(&mut jds, d) else {
            panic!("declared");
        };
        let mut m = custom_job(ok.new_mining_job_token, &t, 1, Some(&k));
        m.version = version;
        let refused = set_job(&mut jds, &m, Some(&k), NOW).unwrap_err();
        assert_eq!(refused.code, "invalid-version");
        assert!(refused.reason.contains("at least 4"), "{}", refused.reason);
    }

    let (t, p) = template(&txs);
    let mut jds = JobDeclarator::new(pool_script(), true);
    jds.on_tip(&p, &t, NOW);
    jds.on_connect(1);
    assert!(jds.on_message(1, setup(0), NOW).close.is_none());
    let mut m = custom_job(allocate(&mut jds, 1), &t, 1, Some(&k));
    m.version = 3;
    assert_eq!(refusal(&mut jds, &m, &k), "invalid-version");
    m.version = 4;
    assert_eq!(set_job(&mut jds, &m, Some(&k), NOW), Ok(()));
}

/// The declarations the tips dropped are remembered, the latest 64: a late
/// upload for one of them is answered stale; one older than that is taken
/// for a request that asked for nothing, which ends the link.
#[test]
fn the_latest_declarations_dropped_by_tips_are_remembered() {
    let txs = [tx(1), tx(2)];
    let (mut jds, t) = declarator(&txs, &[]);
    let mut request_id = 0;
    for round in 0..5u8 {
        for _ in 0..MAX_PENDING_PER_CONNECTION {
            request_id += 1;
            let token = allocate(&mut jds, 1);
            let mut d = declaration(token, &t, vec![pool_output(&t)], &txs);
            d.request_id = request_id;
            assert!(matches!(
                declare(&mut jds, d),
                JobDeclarationOwned::ProvideMissingTransactions(_)
            ));
        }
        let (next, mut prev) = template(&txs);
        prev.prev_hash = U256Owned::from([20 + round; 32]);
        jds.on_tip(&prev, &next, NOW);
    }
    let late = |request_id| {
        jd(JobDeclarationOwned::ProvideMissingTransactionsSuccess(
            ProvideMissingTransactionsSuccessOwned {
                request_id,
                transaction_list: Seq064KOwned::new(vec![]).unwrap(),
            },
        ))
    };
    let newest = jds.on_message(1, late(request_id), NOW);
    assert_eq!(error_code(&only(newest)), "stale-chain-tip");
    let oldest_kept = request_id + 1 - STALE_PENDING_KEPT as u32;
    let kept = jds.on_message(1, late(oldest_kept), NOW);
    assert_eq!(error_code(&only(kept)), "stale-chain-tip");
    assert!(jds
        .on_message(1, late(oldest_kept - 1), NOW)
        .close
        .is_some());
}
