//! The client as a specification: channels pass through with their ids,
//! templates become declarations, declared jobs become custom jobs on every
//! channel, and what the declarator or the pool refuses means the pool's
//! own jobs.

use ehash::wire::str0255_truncated;
use ehash_ext_sv2::EhashMessage;
use stratum_core::binary_sv2::{B032Owned, B064KOwned, Seq0255Owned, Seq064KOwned, U256Owned};
use stratum_core::bitcoin::consensus::serialize;
use stratum_core::bitcoin::{Amount, ScriptBuf, Transaction, TxOut};
use stratum_core::common_messages_sv2::Protocol;
use stratum_core::job_declaration_sv2::{
    AllocateMiningJobTokenSuccessOwned, DeclareMiningJobErrorOwned, DeclareMiningJobSuccessOwned,
    ProvideMissingTransactionsOwned,
};
use stratum_core::mining_sv2::{
    CloseChannelOwned, OpenExtendedMiningChannelSuccessOwned, SetCustomMiningJobErrorOwned,
    SetCustomMiningJobSuccess, SetExtranoncePrefixOwned, SubmitSharesExtendedOwned,
};
use stratum_core::parsers_sv2::{JobDeclarationOwned as Jd, TemplateDistributionOwned as Tdp};
use stratum_core::template_distribution_sv2::{
    NewTemplateOwned, RequestTransactionDataErrorOwned, RequestTransactionDataSuccessOwned,
    SetNewPrevHashOwned,
};

use super::*;

const KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

fn setup(core: &mut JdcCore, down: DownId) {
    core.on_downstream_connect(down);
    let peer = "127.0.0.1:1".parse().unwrap();
    let m = roles_common::sv2::setup_connection(Protocol::MiningProtocol, 0, peer, "", "t");
    let out = core.on_downstream(
        down,
        AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(m)),
    );
    assert!(matches!(&out[..], [Action::Downstream(_, _)]));
}

/// The pool's notification of a share on `channel_id`.
fn notification(channel_id: u32) -> EhashMessage {
    EhashMessage::MintQuoteNotification(ehash_ext_sv2::MintQuoteNotificationOwned {
        channel_id,
        sequence_number: 1,
        share_hash: U256Owned::from([3; 32]),
        quote_id: str0255_truncated("q"),
        keyset_id: str0255_truncated("k"),
        amount: 1,
    })
}

/// A downstream's acknowledgement of the notification on `channel_id`.
fn ack(channel_id: u32) -> EhashMessage {
    EhashMessage::MintQuoteAck(ehash_ext_sv2::MintQuoteAckOwned {
        channel_id,
        share_hashes: Seq064KOwned::new(vec![U256Owned::from([3; 32])]).unwrap(),
    })
}

/// Opens channel `channel_id` for `down` (request 1 downstream); the
/// actions after the pool's success.
fn open(core: &mut JdcCore, down: DownId, channel_id: u32) -> Vec<Action> {
    let open = OpenExtendedMiningChannelOwned {
        request_id: 1,
        user_identity: str0255_truncated(&format!("{KEY}.rig")),
        nominal_hash_rate: 1.0,
        max_target: U256Owned::from([0xff; 32]),
        min_extranonce_size: 4,
    };
    let out = core.on_downstream(down, mining(MiningOwned::OpenExtendedMiningChannel(open)));
    let [Action::Upstream(AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannel(up)))] =
        &out[..]
    else {
        panic!("{out:?}")
    };
    let ok = OpenExtendedMiningChannelSuccessOwned {
        request_id: up.request_id,
        channel_id,
        target: U256Owned::from([0xff; 32]),
        extranonce_size: 8,
        extranonce_prefix: B032Owned::new(vec![channel_id as u8; 8]).unwrap(),
        group_channel_id: 0,
    };
    let out = core.on_upstream(mining(MiningOwned::OpenExtendedMiningChannelSuccess(ok)));
    match &out[0] {
        Action::Downstream(
            to,
            AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(ok)),
        ) => {
            assert_eq!((*to, ok.request_id, ok.channel_id), (down, 1, channel_id));
        }
        other => panic!("{other:?}"),
    }
    out[1..].to_vec()
}

fn template(id: u64, future: bool) -> NewTemplateOwned {
    let outputs = [TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::from_bytes(vec![0x6a, 0x01, 0x00]),
    }];
    NewTemplateOwned {
        template_id: id,
        future_template: future,
        version: 0x2000_0000,
        coinbase_tx_version: 2,
        coinbase_prefix: vec![0x51].try_into().unwrap(),
        coinbase_tx_input_sequence: u32::MAX,
        coinbase_tx_value_remaining: 5_000_000_000,
        coinbase_tx_outputs_count: 1,
        coinbase_tx_outputs: B064KOwned::new(serialize(&outputs[0])).unwrap(),
        coinbase_tx_locktime: 0,
        merkle_path: Seq0255Owned::new(vec![]).unwrap(),
    }
}

fn tdp(m: Tdp) -> AnyMessageOwned {
    AnyMessageOwned::TemplateDistribution(m)
}

fn jd(m: Jd) -> AnyMessageOwned {
    AnyMessageOwned::JobDeclaration(m)
}

/// A tip (template 1, easy nBits) with its (empty) transaction list.
fn tip(core: &mut JdcCore) -> Vec<Action> {
    tip_of(core, 1)
}

/// The tip template `id` activates (easy nBits), with its (empty)
/// transaction list.
fn tip_of(core: &mut JdcCore, id: u64) -> Vec<Action> {
    tip_with(core, template(id, true), &[])
}

/// The transactions of template `id`, from the template provider.
fn transaction_data(core: &mut JdcCore, id: u64, transactions: &[Transaction]) -> Vec<Action> {
    core.on_tp(tdp(Tdp::RequestTransactionDataSuccess(
        RequestTransactionDataSuccessOwned {
            template_id: id,
            excess_data: B064KOwned::new(vec![0; 32]).unwrap(),
            transaction_list: Seq064KOwned::new(
                transactions
                    .iter()
                    .map(|tx| serialize(tx).try_into().unwrap())
                    .collect(),
            )
            .unwrap(),
        },
    )))
}

/// The tip `template` activates (easy nBits), with `transactions`.
fn tip_with(
    core: &mut JdcCore,
    template: NewTemplateOwned,
    transactions: &[Transaction],
) -> Vec<Action> {
    let id = template.template_id;
    let mut out = core.on_tp(tdp(Tdp::NewTemplate(template)));
    out.extend(core.on_tp(tdp(Tdp::SetNewPrevHash(SetNewPrevHashOwned {
        template_id: id,
        prev_hash: U256Owned::from([6 + id as u8; 32]),
        header_timestamp: 1_800_000_000,
        n_bits: 0x207f_ffff,
        target: U256Owned::from([0xff; 32]),
    }))));
    out.extend(transaction_data(core, id, transactions));
    out
}

fn token(core: &mut JdcCore, n: u64) -> Vec<Action> {
    let outputs = vec![TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
    }];
    core.on_jds(jd(Jd::AllocateMiningJobTokenSuccess(
        AllocateMiningJobTokenSuccessOwned {
            request_id: 1,
            mining_job_token: n.to_le_bytes().to_vec().try_into().unwrap(),
            coinbase_outputs: serialize(&outputs).try_into().unwrap(),
        },
    )))
}

fn declared_request(out: &[Action]) -> u32 {
    out.iter()
        .find_map(|a| match a {
            Action::Jds(AnyMessageOwned::JobDeclaration(Jd::DeclareMiningJob(m))) => {
                Some(m.request_id)
            }
            _ => None,
        })
        .expect("a DeclareMiningJob")
}

/// A client in declared mode with channel 5 open and a declared job set on it:
/// the SetCustomMiningJob sent.
fn with_custom_job(core: &mut JdcCore) -> stratum_core::mining_sv2::SetCustomMiningJobOwned {
    assert_eq!(
        core.on_jds_connected().len(),
        2,
        "two tokens asked for ahead"
    );
    setup(core, 1);
    assert!(open(core, 1, 5).is_empty(), "nothing declared yet");
    assert!(
        tip(core).iter().all(|a| matches!(a, Action::Tp(_))),
        "no token yet"
    );
    let request_id = declared_request(&token(core, 11));
    declared(core, request_id)
}

/// The declarator accepted `request_id`: the custom job set on channel 5.
fn declared(
    core: &mut JdcCore,
    request_id: u32,
) -> stratum_core::mining_sv2::SetCustomMiningJobOwned {
    let out = core.on_jds(jd(Jd::DeclareMiningJobSuccess(
        DeclareMiningJobSuccessOwned {
            request_id,
            new_mining_job_token: 12u64.to_le_bytes().to_vec().try_into().unwrap(),
        },
    )));
    match &out[..] {
        [Action::Upstream(AnyMessageOwned::Mining(MiningOwned::SetCustomMiningJob(m)))] => {
            assert_eq!(m.channel_id, 5);
            assert_eq!(m.token.as_bytes(), &12u64.to_le_bytes());
            m.clone()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_declared_job_goes_on_every_channel_committed_to_its_key_and_then_down() {
    let mut core = JdcCore::new(Mode::Declared, "t");
    let m = with_custom_job(&mut core);
    let outputs: Vec<TxOut> =
        stratum_core::bitcoin::consensus::deserialize(m.coinbase_tx_outputs.as_bytes()).unwrap();
    assert_eq!(outputs[0].script_pubkey, ScriptBuf::from_bytes(vec![0x51]));
    assert_eq!(
        outputs[1],
        ehash::coinbase::key_commitment_output(&KEY.parse().unwrap())
    );

    let out = core.on_upstream(mining(MiningOwned::SetCustomMiningJobSuccess(
        SetCustomMiningJobSuccess {
            channel_id: 5,
            request_id: m.request_id,
            job_id: 9,
        },
    )));
    match &out[..] {
        [Action::Downstream(1, AnyMessageOwned::Mining(MiningOwned::NewExtendedMiningJob(job))), Action::Downstream(1, AnyMessageOwned::Mining(MiningOwned::SetNewPrevHash(p)))] =>
        {
            assert_eq!((job.channel_id, job.job_id, p.job_id), (5, 9, 9));
            assert!(
                job.min_ntime.clone().into_inner().is_none(),
                "a future job, activated by the prevhash"
            );
        }
        other => panic!("{other:?}"),
    }

    // A share meeting the (easy) block target is a block: to the template
    // provider and the declarator, and on to the pool as a share.
    let mut found = None;
    for nonce in 0..64 {
        let share = SubmitSharesExtendedOwned {
            channel_id: 5,
            sequence_number: nonce,
            job_id: 9,
            nonce,
            ntime: 1_800_000_000,
            version: 0x2000_0000,
            extranonce: B032Owned::new(vec![0; 8]).unwrap(),
        };
        let out = core.on_downstream(1, mining(MiningOwned::SubmitSharesExtended(share)));
        if out.len() == 3 {
            found = Some(out);
            break;
        }
    }
    let out = found.expect("half of all hashes meet 0x207fffff");
    assert!(
        matches!(&out[0], Action::Tp(AnyMessageOwned::TemplateDistribution(Tdp::SubmitSolution(s))) if s.template_id == 1)
    );
    assert!(matches!(
        &out[1],
        Action::Jds(AnyMessageOwned::JobDeclaration(Jd::PushSolution(_)))
    ));
    assert!(matches!(&out[2], Action::Upstream(_)));
}

/// The pool renews channel 5 on a new extranonce prefix: the declared job
/// is set on it again and goes down active at once on the same tip, with no
/// SetNewPrevHash, so the downstream keeps the jobs it has.
#[test]
fn a_renewed_channel_gets_its_job_again_mined_at_once_on_the_same_tip() {
    let mut core = JdcCore::new(Mode::Declared, "t");
    let m = with_custom_job(&mut core);
    let set = |core: &mut JdcCore, request_id, job_id| {
        core.on_upstream(mining(MiningOwned::SetCustomMiningJobSuccess(
            SetCustomMiningJobSuccess {
                channel_id: 5,
                request_id,
                job_id,
            },
        )))
    };
    assert_eq!(set(&mut core, m.request_id, 9).len(), 2, "job and prevhash");
    let renewal = MiningOwned::SetExtranoncePrefix(SetExtranoncePrefixOwned {
        channel_id: 5,
        extranonce_prefix: B032Owned::new(vec![6; 8]).unwrap(),
    });
    let out = core.on_upstream(mining(renewal));
    let again = match &out[..] {
        [Action::Downstream(1, AnyMessageOwned::Mining(MiningOwned::SetExtranoncePrefix(p))), Action::Upstream(AnyMessageOwned::Mining(MiningOwned::SetCustomMiningJob(m)))] =>
        {
            assert_eq!(p.extranonce_prefix.as_bytes(), [6; 8]);
            m.clone()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(again.prev_hash, m.prev_hash, "the same tip");
    match &set(&mut core, again.request_id, 10)[..] {
        [Action::Downstream(1, AnyMessageOwned::Mining(MiningOwned::NewExtendedMiningJob(job)))] => {
            assert_eq!(job.job_id, 10);
            assert_eq!(job.min_ntime.clone().into_inner(), Some(m.min_ntime));
        }
        other => panic!("{other:?}"),
    }
}

/// A new target: the template is declared again. Each declaration is
/// numbered in its coinbase, so no header is a share of the job set
/// before, which keeps its target.
#[test]
fn a_new_target_means_a_new_declaration_and_new_jobs_at_it() {
    let mut core = JdcCore::new(Mode::Declared, "t");
    let first = with_custom_job(&mut core);
    let outputs = |m: &stratum_core::mining_sv2::SetCustomMiningJobOwned| -> Vec<TxOut> {
        stratum_core::bitcoin::consensus::deserialize(m.coinbase_tx_outputs.as_bytes()).unwrap()
    };
    // The declaration's number (an 8-byte OP_RETURN push), random at start.
    let first_number = outputs(&first)
        .iter()
        .find_map(|o| match o.script_pubkey.as_bytes() {
            [0x6a, 0x08, number @ ..] => Some(u64::from_le_bytes(number.try_into().ok()?)),
            _ => None,
        })
        .expect("a job number");
    assert!(first_number < 1 << 63, "never wraps");
    let mut jobs = vec![first];
    for (number, token_id) in [(first_number + 1, 13), (first_number + 2, 14)] {
        token(&mut core, token_id);
        let retarget = stratum_core::mining_sv2::SetTargetOwned {
            channel_id: 5,
            maximum_target: U256Owned::from([1; 32]),
        };
        let out = core.on_upstream(mining(MiningOwned::SetTarget(retarget)));
        assert!(matches!(&out[0], Action::Downstream(1, _)), "{out:?}");
        let declaration = out
            .iter()
            .find_map(|a| match a {
                Action::Jds(AnyMessageOwned::JobDeclaration(Jd::DeclareMiningJob(m))) => {
                    Some(m.clone())
                }
                _ => None,
            })
            .expect("declared again");
        let again = declared(&mut core, declaration.request_id);
        let before = jobs.last().unwrap();
        assert_eq!(again.prev_hash, before.prev_hash, "the same template");
        assert_eq!(
            outputs(&again)[..2],
            outputs(before)[..2],
            "the pool's output and the key commitment"
        );
        let numbered = ehash::coinbase::job_number_output(number);
        assert!(outputs(&again).contains(&numbered), "{:?}", outputs(&again));
        assert!(!outputs(before).contains(&numbered));
        // The declarator sees the same output in the declared coinbase.
        let suffix = declaration.coinbase_tx_suffix.as_bytes();
        let numbered = stratum_core::bitcoin::consensus::serialize(&numbered);
        assert!(suffix.windows(numbered.len()).any(|w| w == numbered));
        jobs.push(again);
    }
}

/// Only the channel whose target changed gets the template declared again
/// (a channel retargeted while that declaration is on its way gets it too);
/// the other channels keep their jobs.
#[test]
fn a_template_declared_again_goes_on_the_retargeted_channels_only() {
    let mut core = JdcCore::new(Mode::Declared, "t");
    with_custom_job(&mut core);
    for id in [6, 7] {
        let out = open(&mut core, 1, id);
        assert!(
            matches!(&out[..], [Action::Upstream(AnyMessageOwned::Mining(MiningOwned::SetCustomMiningJob(m)))] if m.channel_id == id),
            "{out:?}"
        );
    }
    token(&mut core, 13);
    let request_id = declared_request(&core.on_upstream(retarget(5)));
    let out = core.on_upstream(retarget(6));
    assert!(
        out.iter().all(|a| !matches!(a, Action::Jds(_))),
        "one declaration: {out:?}"
    );
    let out = core.on_jds(jd(Jd::DeclareMiningJobSuccess(
        DeclareMiningJobSuccessOwned {
            request_id,
            new_mining_job_token: 14u64.to_le_bytes().to_vec().try_into().unwrap(),
        },
    )));
    assert_eq!(set_on(&out), vec![5, 6], "{out:?}");
}

/// SetTarget for `channel_id`.
fn retarget(channel_id: u32) -> AnyMessageOwned {
    mining(MiningOwned::SetTarget(
        stratum_core::mining_sv2::SetTargetOwned {
            channel_id,
            maximum_target: U256Owned::from([1; 32]),
        },
    ))
}

/// The channels the SetCustomMiningJobs among `out` are for.
fn set_on(out: &[Action]) -> Vec<u32> {
    out.iter()
        .filter_map(|a| match a {
            Action::Upstream(AnyMessageOwned::Mining(MiningOwned::SetCustomMiningJob(m))) => {
                Some(m.channel_id)
            }
            _ => None,
        })
        .collect()
}

/// A channel whose target changes while the template provider withholds
/// the current template's transactions gets the declared template it
/// mines declared again at its new target, not its old job until the next
/// template.
#[test]
fn a_retargeted_channel_gets_the_template_it_mines_again_when_the_current_one_has_no_transactions()
{
    let mut core = JdcCore::new(Mode::Declared, "t");
    let first = with_custom_job(&mut core);
    let mut newer = template(2, false);
    newer.coinbase_tx_value_remaining = 4_000_000_000;
    core.on_tp(tdp(Tdp::NewTemplate(newer)));
    core.on_tp(tdp(Tdp::RequestTransactionDataError(
        RequestTransactionDataErrorOwned {
            template_id: 2,
            error_code: "template-id-not-found".to_string().try_into().unwrap(),
        },
    )));
    token(&mut core, 13);
    let request_id = declared_request(&core.on_upstream(retarget(5)));
    let again = declared(&mut core, request_id);
    let paid = |m: &stratum_core::mining_sv2::SetCustomMiningJobOwned| {
        let outputs: Vec<TxOut> =
            stratum_core::bitcoin::consensus::deserialize(m.coinbase_tx_outputs.as_bytes())
                .unwrap();
        outputs[0].value
    };
    assert_eq!(paid(&again), Amount::from_sat(5_000_000_000), "template 1");
    assert_eq!(paid(&again), paid(&first));
    assert_ne!(
        again.coinbase_tx_outputs, first.coinbase_tx_outputs,
        "numbered anew"
    );
}

/// A declaration for every channel on its way covers a channel retargeted
/// meanwhile: the template it mines is not declared again for it, which,
/// answered last, would put it back on the older job.
#[test]
fn a_retargeted_channel_waits_for_a_later_declaration_on_its_way_rather_than_the_template_it_mines()
{
    let mut core = JdcCore::new(Mode::Declared, "t");
    with_custom_job(&mut core);
    token(&mut core, 13);
    core.on_tp(tdp(Tdp::NewTemplate(template(2, false))));
    let request_id = declared_request(&transaction_data(&mut core, 2, &[]));
    token(&mut core, 14);
    core.on_tp(tdp(Tdp::NewTemplate(template(3, false))));
    let out = core.on_upstream(retarget(5));
    assert!(
        out.iter().all(|a| !matches!(a, Action::Jds(_))),
        "nothing declared: {out:?}"
    );
    let out = core.on_jds(jd(Jd::DeclareMiningJobSuccess(
        DeclareMiningJobSuccessOwned {
            request_id,
            new_mining_job_token: 15u64.to_le_bytes().to_vec().try_into().unwrap(),
        },
    )));
    assert_eq!(set_on(&out), vec![5], "at its new target");
}

/// A retargeted channel waits for what its declaration needs: a token, or
/// the retry after a stale-tip refusal; then it gets its job.
#[test]
fn a_retargeted_channel_keeps_waiting_through_a_missing_token_and_a_stale_tip() {
    let mut core = JdcCore::new(Mode::Declared, "t");
    with_custom_job(&mut core);
    let out = core.on_upstream(retarget(5));
    assert!(
        out.iter().all(|a| !matches!(a, Action::Jds(_))),
        "no token yet: {out:?}"
    );
    let request_id = declared_request(&token(&mut core, 13));
    assert!(core
        .on_jds(declare_error(request_id, "stale-chain-tip"))
        .is_empty());
    token(&mut core, 14);
    let request_id = declared_request(&core.on_stale_retry());
    let out = core.on_jds(jd(Jd::DeclareMiningJobSuccess(
        DeclareMiningJobSuccessOwned {
            request_id,
            new_mining_job_token: 15u64.to_le_bytes().to_vec().try_into().unwrap(),
        },
    )));
    assert_eq!(set_on(&out), vec![5], "{out:?}");
}

/// A channel closed while it waited for its declaration costs none.
#[test]
fn a_retargeted_channel_that_closes_is_not_declared_for() {
    let mut core = JdcCore::new(Mode::Declared, "t");
    with_custom_job(&mut core);
    assert_eq!(set_on(&open(&mut core, 1, 6)), vec![6]);
    core.on_upstream(retarget(5));
    let close = stratum_core::mining_sv2::CloseChannelOwned {
        channel_id: 5,
        reason_code: str0255_truncated("gone"),
    };
    core.on_upstream(mining(MiningOwned::CloseChannel(close)));
    let out = token(&mut core, 13);
    assert!(out.iter().all(|a| !matches!(a, Action::Jds(_))), "{out:?}");
}

/// Declarations answered out of order: the later template's job stays on
/// the channels.
#[test]
fn a_declaration_answered_after_a_later_one_is_not_set() {
    let mut core = JdcCore::new(Mode::Declared, "t");
    with_custom_job(&mut core);
    let mut requests = vec![];
    for (id, token_id) in [(2, 13), (3, 14)] {
        core.on_tp(tdp(Tdp::NewTemplate(template(id, false))));
        transaction_data(&mut core, id, &[]);
        requests.push(declared_request(&token(&mut core, token_id)));
    }
    let success = |request_id| {
        jd(Jd::DeclareMiningJobSuccess(DeclareMiningJobSuccessOwned {
            request_id,
            new_mining_job_token: 15u64.to_le_bytes().to_vec().try_into().unwrap(),
        }))
    };
    assert_eq!(set_on(&core.on_jds(success(requests[1]))), vec![5]);
    let out = core.on_jds(success(requests[0]));
    assert!(set_on(&out).is_empty(), "{out:?}");
}

#[test]
fn the_first_channel_declares_the_template_that_came_before_it() {
    let mut core = JdcCore::new(Mode::Declared, "t");
    core.on_jds_connected();
    token(&mut core, 11);
    assert!(
        tip(&mut core).iter().all(|a| matches!(a, Action::Tp(_))),
        "no channel yet"
    );
    setup(&mut core, 1);
    let request_id = declared_request(&open(&mut core, 1, 5));
    declared(&mut core, request_id);
}

/// The declarator may ask for a declaration's transactions after this
/// client's tip moved: they are still there.
#[test]
fn a_declaration_in_flight_keeps_its_transactions_across_a_new_tip() {
    let mut core = JdcCore::new(Mode::Declared, "t");
    core.on_jds_connected();
    setup(&mut core, 1);
    open(&mut core, 1, 5);
    let tx = Transaction {
        version: stratum_core::bitcoin::transaction::Version::TWO,
        lock_time: stratum_core::bitcoin::absolute::LockTime::ZERO,
        input: vec![Default::default()],
        output: vec![TxOut {
            value: Amount::from_sat(1),
            script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
        }],
    };
    tip_with(&mut core, template(1, true), std::slice::from_ref(&tx));
    let request_id = declared_request(&token(&mut core, 11));
    tip_of(&mut core, 2);
    let ask = |positions: Vec<u16>| {
        jd(Jd::ProvideMissingTransactions(
            ProvideMissingTransactionsOwned {
                request_id,
                unknown_tx_position_list: Seq064KOwned::new(positions).unwrap(),
            },
        ))
    };
    // The same transaction many times over would be a huge answer.
    assert!(matches!(
        &core.on_jds(ask(vec![0; 1000]))[..],
        [Action::FallBack(reason)] if reason.contains("twice")
    ));
    match &core.on_jds(ask(vec![0]))[..] {
        [Action::Jds(AnyMessageOwned::JobDeclaration(Jd::ProvideMissingTransactionsSuccess(m)))] => {
            assert_eq!(m.request_id, request_id);
            assert_eq!(
                m.transaction_list.clone().into_inner()[0].as_bytes(),
                serialize(&tx)
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A long block brings template after template: only those that may still
/// be declared keep their transactions.
#[test]
fn a_template_replaced_on_the_same_tip_frees_its_transactions() {
    let mut core = JdcCore::new(Mode::Declared, "t");
    tip(&mut core);
    for id in 2..=4 {
        core.on_tp(tdp(Tdp::NewTemplate(template(id, false))));
        transaction_data(&mut core, id, &[]);
    }
    assert_eq!(
        core.jobs.templates_with_transactions(),
        1,
        "the current one"
    );
}

/// A template whose coinbase cannot be built keeps the token for the next.
#[test]
fn a_template_that_cannot_be_declared_keeps_its_token() {
    let mut core = JdcCore::new(Mode::Declared, "t");
    core.on_jds_connected();
    setup(&mut core, 1);
    assert!(open(&mut core, 1, 5).is_empty(), "nothing to declare yet");
    token(&mut core, 11);
    let mut bad = template(1, true);
    bad.coinbase_tx_outputs = B064KOwned::new(vec![0xff; 3]).unwrap();
    let out = tip_with(&mut core, bad, &[]);
    assert!(
        out.iter().all(|a| matches!(a, Action::Tp(_))),
        "not declared: {out:?}"
    );
    let out = tip_of(&mut core, 2);
    let declared = out.iter().find_map(|a| match a {
        Action::Jds(AnyMessageOwned::JobDeclaration(Jd::DeclareMiningJob(m))) => Some(m),
        _ => None,
    });
    assert_eq!(
        declared.map(|m| m.mining_job_token.as_bytes().to_vec()),
        Some(11u64.to_le_bytes().to_vec())
    );
}

/// A client in declared mode with channel 5 open, declaring the tip's
/// template: the declaration's request id.
fn declaring() -> (JdcCore, u32) {
    let mut core = JdcCore::new(Mode::Declared, "t");
    core.on_jds_connected();
    setup(&mut core, 1);
    open(&mut core, 1, 5);
    tip(&mut core);
    let request_id = declared_request(&token(&mut core, 11));
    (core, request_id)
}

/// The declarator refuses `request_id` with `code` ("why" in the details).
fn declare_error(request_id: u32, code: &str) -> AnyMessageOwned {
    jd(Jd::DeclareMiningJobError(DeclareMiningJobErrorOwned {
        request_id,
        error_code: str0255_truncated(code),
        error_details: B064KOwned::new(b"why".to_vec()).unwrap(),
    }))
}

#[test]
fn refusals_other_than_a_stale_tip_or_a_full_channel_mean_the_pool_s_jobs() {
    let mut core = JdcCore::new(Mode::Declared, "t");
    let m = with_custom_job(&mut core);
    let refused = |code: &str| {
        mining(MiningOwned::SetCustomMiningJobError(
            SetCustomMiningJobErrorOwned {
                channel_id: 5,
                request_id: m.request_id,
                error_code: str0255_truncated(code),
            },
        ))
    };
    // With no job set on this tip, a channel the pool takes no job on
    // would mine stale work: the pool's jobs.
    let full = mining(MiningOwned::SetCustomMiningJobError(
        SetCustomMiningJobErrorOwned {
            channel_id: 5,
            request_id: m.request_id + 1,
            error_code: str0255_truncated("too-many-jobs-on-this-tip"),
        },
    ));
    assert!(matches!(
        &core.on_upstream(full)[..],
        [Action::FallBack(reason)] if reason.contains("too-many-jobs-on-this-tip")
    ));
    // With one set, it mines that one.
    core.on_upstream(mining(MiningOwned::SetCustomMiningJobSuccess(
        SetCustomMiningJobSuccess {
            channel_id: 5,
            request_id: m.request_id,
            job_id: 9,
        },
    )));
    assert!(core
        .on_upstream(refused("too-many-jobs-on-this-tip"))
        .is_empty());
    assert!(core.on_upstream(refused("stale-chain-tip")).is_empty());
    assert!(matches!(
        &core.on_upstream(refused("job-headers-at-another-target"))[..],
        [Action::FallBack(_)]
    ));
    assert!(matches!(
        &core.on_upstream(refused("invalid-coinbase-tx-outputs"))[..],
        [Action::FallBack(reason)] if reason.contains("invalid-coinbase-tx-outputs")
    ));

    let (mut core, request_id) = declaring();
    let error = |code: &str| declare_error(request_id, code);
    assert!(core.on_jds(error("stale-chain-tip")).is_empty());
    assert!(matches!(
        &core.on_jds(error("invalid-coinbase-tx"))[..],
        [Action::FallBack(reason)] if reason.contains("invalid-coinbase-tx (why)")
    ));
}

/// The pool closed the channel (idle) while its custom job was on the
/// way: the refusal of the job is that of a closed channel, not of the job.
#[test]
fn a_custom_job_refused_on_a_channel_the_pool_closed_meanwhile_changes_nothing() {
    let mut core = JdcCore::new(Mode::Declared, "t");
    let m = with_custom_job(&mut core);
    let closed = core.on_upstream(mining(MiningOwned::CloseChannel(CloseChannelOwned {
        channel_id: 5,
        reason_code: str0255_truncated("idle-channel"),
    })));
    assert!(
        matches!(&closed[..], [Action::Downstream(1, _)]),
        "{closed:?}"
    );
    let refused = core.on_upstream(mining(MiningOwned::SetCustomMiningJobError(
        SetCustomMiningJobErrorOwned {
            channel_id: 5,
            request_id: m.request_id,
            error_code: str0255_truncated("invalid-channel-id"),
        },
    )));
    assert!(refused.is_empty(), "{refused:?}");
}

/// The tip moved while a custom job was on the way: its refusal (the pool
/// full for the tip it was on) is of a job this client has left. On the
/// tip it is on, the same refusal sends the channel, with no job on the
/// tip, to the pool's jobs.
#[test]
fn a_custom_job_refused_after_its_tip_was_left_changes_nothing() {
    let full = |m: &stratum_core::mining_sv2::SetCustomMiningJobOwned| {
        mining(MiningOwned::SetCustomMiningJobError(
            SetCustomMiningJobErrorOwned {
                channel_id: 5,
                request_id: m.request_id,
                error_code: str0255_truncated("too-many-jobs-on-this-tip"),
            },
        ))
    };
    let mut core = JdcCore::new(Mode::Declared, "t");
    let m = with_custom_job(&mut core);
    tip_of(&mut core, 2);
    let refused = core.on_upstream(full(&m));
    assert!(refused.is_empty(), "{refused:?}");

    let mut core = JdcCore::new(Mode::Declared, "t");
    let m = with_custom_job(&mut core);
    assert!(matches!(
        &core.on_upstream(full(&m))[..],
        [Action::FallBack(reason)] if reason.contains("too-many-jobs-on-this-tip")
    ));
}

/// The declarator refuses a declaration as on a stale tip (the pool's
/// template provider behind this client's, or this client's behind): the
/// template is not declared again with each new token, which would repeat
/// the refusal round trip after round trip, but on the retry timer; the
/// next template is declared at once.
#[test]
fn a_template_refused_as_on_a_stale_tip_waits_for_the_next_one() {
    let (mut core, request_id) = declaring();
    let stale = declare_error(request_id, "stale-chain-tip");
    assert!(core.on_jds(stale).is_empty());
    assert!(
        token(&mut core, 12).is_empty(),
        "the refused template is not declared again"
    );
    let again = declared_request(&core.on_stale_retry());
    assert!(core.on_stale_retry().is_empty(), "one retry per refusal");
    assert!(core
        .on_jds(declare_error(again, "stale-chain-tip"))
        .is_empty());
    assert!(
        token(&mut core, 13).is_empty(),
        "refused again: waits again"
    );
    declared_request(&tip_of(&mut core, 2));
}

/// A pool whose tip this client's template provider never reaches refuses
/// every declaration as stale: after a while, the pool's jobs.
#[test]
fn declarations_refused_as_stale_for_too_long_mean_the_pool_s_jobs() {
    let (mut core, mut request_id) = declaring();
    for n in 0..MAX_STALE_RETRIES {
        assert!(core
            .on_jds(declare_error(request_id, "stale-chain-tip"))
            .is_empty());
        token(&mut core, 20 + n as u64);
        request_id = declared_request(&core.on_stale_retry());
    }
    assert!(core
        .on_jds(declare_error(request_id, "stale-chain-tip"))
        .is_empty());
    assert!(matches!(&core.on_stale_retry()[..], [Action::FallBack(_)]));
}

#[test]
fn pool_jobs_shares_and_notifications_pass_through_to_the_channel_s_owner_only() {
    let mut core = JdcCore::new(Mode::PoolJobs, "t");
    setup(&mut core, 1);
    setup(&mut core, 2);
    assert!(
        open(&mut core, 1, 5).is_empty(),
        "no custom jobs in this mode"
    );
    // Downstream 2 asks for ehash, downstream 1 did not.
    open(&mut core, 2, 6);
    let ask = stratum_core::extensions_sv2::RequestExtensionsOwned {
        request_id: 3,
        requested_extensions: Seq064KOwned::new(vec![EHASH_EXTENSION_TYPE, 0x9999]).unwrap(),
    };
    let out = core.on_downstream(
        2,
        AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(
            ExtensionsNegotiationOwned::RequestExtensions(ask),
        )),
    );
    assert!(
        matches!(&out[..], [Action::Downstream(2, AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(ExtensionsNegotiationOwned::RequestExtensionsSuccess(s))))] if s.supported_extensions.clone().into_inner() == vec![EHASH_EXTENSION_TYPE])
    );

    let job = stratum_core::mining_sv2::SetTargetOwned {
        channel_id: 6,
        maximum_target: U256Owned::from([1; 32]),
    };
    assert!(matches!(
        &core.on_upstream(mining(MiningOwned::SetTarget(job)))[..],
        [Action::Downstream(2, _)]
    ));
    assert!(matches!(
        &core.on_upstream_ehash(notification(6))[..],
        [Action::DownstreamEhash(2, _)]
    ));
    assert!(
        core.on_upstream_ehash(notification(5)).is_empty(),
        "1 did not negotiate ehash"
    );

    // A share for a channel of another downstream goes nowhere.
    let share = SubmitSharesExtendedOwned {
        channel_id: 6,
        sequence_number: 1,
        job_id: 1,
        nonce: 0,
        ntime: 0,
        version: 0,
        extranonce: B032Owned::new(vec![]).unwrap(),
    };
    assert!(core
        .on_downstream(1, mining(MiningOwned::SubmitSharesExtended(share.clone())))
        .is_empty());
    assert!(matches!(
        &core.on_downstream(2, mining(MiningOwned::SubmitSharesExtended(share)))[..],
        [Action::Upstream(_)]
    ));
    // Acknowledgements go up for the downstream's own channels only.
    assert!(matches!(
        &core.on_downstream_ehash(2, ack(6))[..],
        [Action::UpstreamEhash(_)]
    ));
    assert!(core.on_downstream_ehash(1, ack(6)).is_empty());
    assert!(core.on_downstream_ehash(2, ack(99)).is_empty());
    // A downstream leaving closes its channels upstream.
    open(&mut core, 2, 7);
    assert!(matches!(
        &core.on_downstream_disconnect(2)[..],
        [Action::Upstream(AnyMessageOwned::Mining(MiningOwned::CloseChannel(a))), Action::Upstream(AnyMessageOwned::Mining(MiningOwned::CloseChannel(b)))]
            if (a.channel_id, b.channel_id) == (6, 7)
    ));
}

#[test]
fn a_share_notified_after_its_channel_closed_still_reaches_its_owner() {
    let mut core = JdcCore::new(Mode::PoolJobs, "t");
    setup(&mut core, 1);
    open(&mut core, 1, 6);
    let ask = stratum_core::extensions_sv2::RequestExtensionsOwned {
        request_id: 3,
        requested_extensions: Seq064KOwned::new(vec![EHASH_EXTENSION_TYPE]).unwrap(),
    };
    core.on_downstream(
        1,
        AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(
            ExtensionsNegotiationOwned::RequestExtensions(ask),
        )),
    );
    let close = stratum_core::mining_sv2::CloseChannelOwned {
        channel_id: 6,
        reason_code: str0255_truncated("miner left"),
    };
    let out = core.on_downstream(1, mining(MiningOwned::CloseChannel(close)));
    assert!(matches!(&out[..], [Action::Upstream(_)]));
    assert_eq!(core.channels(), 0);
    let late = notification(6);
    assert!(matches!(
        &core.on_upstream_ehash(late)[..],
        [Action::DownstreamEhash(1, _)]
    ));
    assert!(matches!(
        &core.on_downstream_ehash(1, ack(6))[..],
        [Action::UpstreamEhash(_)]
    ));
}
