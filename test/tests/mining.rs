//! The pool and devnet-tp against each other on 127.0.0.1 (port 0): channels
//! over Noise, share acceptance and rejection codes, blocks, a template
//! provider restart, and hostile connections.

use std::time::Duration;

use ehash::UnitBits;
use ehash_ext_sv2::{EhashMessage, MintQuoteNotificationOwned, EHASH_EXTENSION_TYPE};
use hashpool_tests::*;
use pool::{PoolEvent, SendExtensionError};
use roles_common::testing::{load_shipped, shipped_config_with};
use stratum_core::binary_sv2::U256Owned;
use stratum_core::bitcoin::{hashes::Hash, BlockHash, Target};
use stratum_core::common_messages_sv2::Protocol;
use stratum_core::parsers_sv2::{
    AnyMessageOwned, CommonMessagesOwned, ExtensionsNegotiationOwned, MiningOwned,
};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

const IDENTITY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798.worker1";
/// ~100 hashes per share at 6 shares/minute.
const HASHRATE: f32 = 10.0;

#[tokio::test]
async fn channels_open_over_noise_and_shares_get_the_right_answer() {
    let mut stack = Stack::start(NBITS_NEVER).await;
    let mut client = stack.client().await;

    // The ehash extension is granted.
    match client.request_extensions(vec![EHASH_EXTENSION_TYPE]).await {
        ExtensionsNegotiationOwned::RequestExtensionsSuccess(s) => {
            assert_eq!(
                s.supported_extensions.into_inner(),
                vec![EHASH_EXTENSION_TYPE]
            )
        }
        other => panic!("ehash extension refused: {other:?}"),
    }

    let channel = client.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    client.wait_for_work(channel).await;

    // A valid share is accepted and published as an AcceptedShare.
    let share = client
        .mine_one(channel)
        .await
        .expect("valid share accepted");
    let accepted = stack
        .accepted
        .recv()
        .await
        .expect("accepted share published");
    assert_eq!(accepted.channel_id, channel);
    assert_eq!(accepted.header, share.header);
    assert_eq!(sha256d(&accepted.header), accepted.share_hash);
    assert_eq!(accepted.share_hash, share.hash);
    let target = client.channels[&channel].target();
    assert_eq!(accepted.target, target.to_le_bytes());
    assert!(Target::from_le_bytes(accepted.share_hash) <= target);
    assert_eq!(
        accepted.amount,
        ehash::ehash_amount(target, UnitBits::new(0).unwrap())
    );
    assert!(accepted.amount > 0);
    assert_eq!(
        accepted.locking_key.map(|k| k.to_string()).as_deref(),
        Some(LOCKING_KEY)
    );
    assert!(!accepted.block_found);

    // The same share again: duplicate.
    assert_eq!(
        client.submit_and_wait(channel, &share).await,
        Err("duplicate-share".into())
    );

    // A hash above the channel target: difficulty too low.
    let weak = client.find_share(channel, |h| h > target);
    assert_eq!(
        client.submit_and_wait(channel, &weak).await,
        Err("difficulty-too-low".into())
    );

    // A channel that does not exist.
    let good = client.valid_share(channel, false);
    let seq = client.submit(channel, &good).await;
    client
        .channels
        .insert(999_999, client.channels[&channel].clone());
    client.submit_with_seq(999_999, &good, seq + 1).await;
    assert_eq!(client.share_result(channel, seq).await, Ok(()));
    assert_eq!(
        client.share_result(999_999, seq + 1).await,
        Err("invalid-channel-id".into())
    );

    // A job the channel never had.
    let mut bogus = client.valid_share(channel, false);
    bogus.job_id = 424_242;
    assert_eq!(
        client.submit_and_wait(channel, &bogus).await,
        Err("invalid-job-id".into())
    );

    // A standard channel on the same connection mines too.
    let standard = client.open_standard(IDENTITY, HASHRATE).await.unwrap();
    client.wait_for_work(standard).await;
    client
        .mine_one(standard)
        .await
        .expect("standard share accepted");
    let accepted = loop {
        let a = stack.accepted.recv().await.unwrap();
        if a.channel_id == standard {
            break a;
        }
    };
    assert_eq!(sha256d(&accepted.header), accepted.share_hash);

    // Extension frames reach the connection that owns the channel.
    assert_eq!(stack.pool.channel_has_ehash(channel), Some(true));
    let note = MintQuoteNotificationOwned {
        channel_id: channel,
        sequence_number: 1,
        share_hash: U256Owned::from(accepted.share_hash),
        quote_id: str0255("quote-1"),
        keyset_id: str0255("00abcdef"),
        amount: 5,
    };
    stack
        .pool
        .send_extension(channel, EhashMessage::MintQuoteNotification(note.clone()))
        .unwrap();
    let got = client
        .wait_for(|m| match m {
            Incoming::Ehash(e) => Some(e.clone()),
            _ => None,
        })
        .await;
    assert_eq!(got, EhashMessage::MintQuoteNotification(note));
    assert_eq!(
        stack.pool.send_extension(
            4_000_000,
            EhashMessage::MintQuoteNotification(MintQuoteNotificationOwned {
                channel_id: 4_000_000,
                sequence_number: 1,
                share_hash: U256Owned::from([0u8; 32]),
                quote_id: str0255("q"),
                keyset_id: str0255("k"),
                amount: 1,
            })
        ),
        Err(SendExtensionError::UnknownChannel(4_000_000))
    );

    // UpdateChannel with a higher hashrate: SetTarget with a harder target.
    client.update_channel(channel, HASHRATE * 1000.0).await;
    let new_target = client
        .wait_for(|m| match m {
            Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SetTarget(t)))
                if t.channel_id == channel =>
            {
                Some(Target::from_le_bytes(t.maximum_target.to_array()))
            }
            _ => None,
        })
        .await;
    assert!(new_target < target);

    let stats = stack.pool.stats();
    assert_eq!(stats.shares_accepted, 3);
    assert_eq!(stats.shares_rejected, 4);
    // Nothing above closed the connection.
    assert!(stack
        .events
        .try_recv()
        .map_or(true, |e| !matches!(e, PoolEvent::ConnectionClosed { .. })));
    stack.stop().await;
}

/// A job sent on a retarget has a coinbase of its own, so a hash is a
/// share of the one job it was mined on, paid at that job's target: a hash
/// of the job sent before, meeting the new, harder target, is paid at the
/// old one; named as the new job's, it is another header.
#[tokio::test]
async fn a_hash_is_paid_at_the_target_of_the_one_job_it_was_mined_on() {
    let mut stack = Stack::start(NBITS_NEVER).await;
    let mut client = stack.client().await;
    let channel = client.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    client.wait_for_work(channel).await;
    let (old_job, old_target) = {
        let c = &client.channels[&channel];
        (c.active_job.unwrap(), c.target())
    };
    client.update_channel(channel, HASHRATE * 8.0).await;
    while client.channels[&channel].active_job == Some(old_job) {
        let m = client.recv().await.expect("connection open");
        client.seen.push(m);
    }
    let (new_job, new_target) = {
        let c = &client.channels[&channel];
        (c.active_job.unwrap(), c.target())
    };
    assert!(new_target < old_target);
    let suffix = |job| {
        client.channels[&channel].extended_jobs[&job]
            .coinbase_tx_suffix
            .clone()
    };
    assert_ne!(suffix(old_job), suffix(new_job), "a coinbase of its own");

    client.channels.get_mut(&channel).unwrap().active_job = Some(old_job);
    let found = client.find_share(channel, |h| h <= new_target);
    client.channels.get_mut(&channel).unwrap().active_job = Some(new_job);
    let renamed = FoundShare {
        job_id: new_job,
        ..found.clone()
    };
    let renamed_result = client.submit_and_wait(channel, &renamed).await;
    assert_eq!(client.submit_and_wait(channel, &found).await, Ok(()));

    let mut paid = vec![stack.accepted.recv().await.unwrap()];
    if renamed_result.is_ok() {
        paid.push(stack.accepted.recv().await.unwrap());
    }
    let of_found: Vec<_> = paid.iter().filter(|a| a.header == found.header).collect();
    assert_eq!(of_found.len(), 1, "paid once: {paid:?}");
    assert_eq!(of_found[0].target, old_target.to_le_bytes());
    assert_eq!(
        of_found[0].amount,
        ehash::ehash_amount(old_target, UnitBits::new(0).unwrap())
    );
    stack.stop().await;
}

#[tokio::test]
async fn unknown_extensions_and_missing_locking_keys_are_refused() {
    let stack = Stack::start(NBITS_NEVER).await;
    let mut client = stack.client().await;

    // An extension the pool does not know: RequestExtensions.Error naming it.
    match client.request_extensions(vec![0x0002]).await {
        ExtensionsNegotiationOwned::RequestExtensionsError(e) => {
            assert_eq!(e.unsupported_extensions.into_inner(), vec![0x0002]);
        }
        other => panic!("expected RequestExtensions.Error, got {other:?}"),
    }

    // No locking key in user_identity: refused with a clear error code.
    assert_eq!(
        client.open_extended("just-a-worker", HASHRATE, 8).await,
        Err("invalid-user-identity".into())
    );
    assert_eq!(
        client.open_standard("02abcd", HASHRATE).await,
        Err("invalid-user-identity".into())
    );
    // A channel of a connection without the extension gets no ehash frames.
    let channel = client.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    assert_eq!(stack.pool.channel_has_ehash(channel), Some(false));
    let note = EhashMessage::MintQuoteNotification(MintQuoteNotificationOwned {
        channel_id: channel,
        sequence_number: 1,
        share_hash: U256Owned::from([0u8; 32]),
        quote_id: str0255("q"),
        keyset_id: str0255("k"),
        amount: 1,
    });
    assert_eq!(
        stack.pool.send_extension(channel, note),
        Err(SendExtensionError::NotNegotiated(channel))
    );
    stack.stop().await;

    // With require_locking_key = false the same identity opens a keyless channel.
    let mut stack = Stack::start_with(NBITS_NEVER, |c| c.require_locking_key = false).await;
    let mut client = stack.client().await;
    let channel = client
        .open_extended("just-a-worker", HASHRATE, 8)
        .await
        .unwrap();
    client.wait_for_work(channel).await;
    client.mine_one(channel).await.unwrap();
    let accepted = stack.accepted.recv().await.unwrap();
    assert_eq!(accepted.locking_key, None);
    stack.stop().await;
}

#[tokio::test]
async fn a_found_block_moves_the_tip_and_every_channel_gets_new_work() {
    let mut stack = Stack::start(NBITS_EASY).await;
    let mut blocks = stack.tp.subscribe_blocks();
    let mut miner = stack.client().await;
    let mut other = stack.client().await;
    let chan = miner.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    let other_ext = other.open_extended(IDENTITY, HASHRATE, 4).await.unwrap();
    let other_std = other.open_standard(IDENTITY, HASHRATE).await.unwrap();
    miner.wait_for_work(chan).await;
    other.wait_for_work(other_ext).await;
    other.wait_for_work(other_std).await;
    let old_tip = stack.tp.tip_hash();
    assert_eq!(stack.tp.height(), 0);

    // Two shares on the current job: both solve a block at this target.
    let block_share = miner.valid_share(chan, true);
    let late_share = miner.find_share(chan, |h| {
        h <= miner.channels[&chan].target() && h.to_le_bytes() != block_share.hash
    });
    assert_eq!(miner.submit_and_wait(chan, &block_share).await, Ok(()));
    let accepted = stack.accepted.recv().await.unwrap();
    assert!(accepted.block_found);
    assert_eq!(sha256d(&accepted.header), accepted.share_hash);

    // devnet-tp appended the block and moved the tip.
    let block = tokio::time::timeout(WAIT, blocks.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(block.height, 1);
    assert_eq!(block.hash, BlockHash::from_byte_array(block_share.hash));
    assert_eq!(stack.tp.height(), 1);
    assert_eq!(stack.tp.tip_hash(), block.hash);
    assert_ne!(old_tip, block.hash);

    // Every open channel gets the new prevhash and a job on it.
    for (which, channel) in [(0, chan), (1, other_ext), (1, other_std)] {
        let client = if which == 0 { &mut miner } else { &mut other };
        // Wait for this tip's prevhash itself: an earlier one may be re-sent.
        while client.channels[&channel]
            .prev_hash
            .as_ref()
            .is_none_or(|p| p.prev_hash.to_array() != block.hash.to_byte_array())
        {
            let msg = client.recv().await.expect("connection open");
            client.seen.push(msg);
        }
        client.wait_for_prev_hash_count(channel, 2).await;
        let c = &client.channels[&channel];
        let prev = c.prev_hash.as_ref().unwrap();
        assert_eq!(prev.prev_hash.to_array(), block.hash.to_byte_array());
        assert_ne!(c.active_job, Some(block_share.job_id));
    }

    // A share on the job of the old tip is stale.
    assert_eq!(
        miner.submit_and_wait(chan, &late_share).await,
        Err("stale-share".into())
    );

    // Mining continues on the new tip: the next block is height 2.
    let next = miner.valid_share(chan, true);
    assert_eq!(miner.submit_and_wait(chan, &next).await, Ok(()));
    let block = tokio::time::timeout(WAIT, blocks.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(block.height, 2);
    assert_eq!(stack.pool.stats().blocks_found, 2);
    stack.stop().await;
}

/// Nothing acknowledges a SubmitSolution: one written into a link that then
/// dies goes again on the next link.
#[tokio::test]
async fn a_block_solution_lost_with_its_template_provider_link_is_sent_again() {
    let (mut stack, relay) = Stack::start_behind_relay(NBITS_EASY).await;
    let mut blocks = stack.tp.subscribe_blocks();
    let mut miner = stack.client().await;
    let chan = miner.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    miner.wait_for_work(chan).await;

    // The link loses the pool's next bytes, its SubmitSolution, and closes.
    relay.lose_next_write_over(0);
    let block_share = miner.valid_share(chan, true);
    assert_eq!(miner.submit_and_wait(chan, &block_share).await, Ok(()));
    stack
        .wait_event(|e| matches!(e, PoolEvent::TemplateProviderDisconnected { .. }))
        .await;

    // The next link carries it again: devnet-tp appends the block.
    let block = tokio::time::timeout(WAIT, blocks.recv())
        .await
        .expect("the block reaches devnet-tp on the next link")
        .unwrap();
    assert_eq!(block.hash, BlockHash::from_byte_array(block_share.hash));
    assert_eq!(stack.tp.height(), 1);
    stack.stop().await;
}

/// The template provider link backs off while the provider is down, and
/// waits the least again after a link that held: a provider restarting
/// now and then costs the pool a moment each time, not seconds of work on
/// an old template.
#[tokio::test]
async fn the_template_provider_link_backs_off_and_starts_over_after_a_link_that_held() {
    let (mut stack, relay) = Stack::start_behind_relay(NBITS_NEVER).await;
    async fn next_retry(stack: &mut Stack) -> Duration {
        match stack
            .wait_event(|e| matches!(e, PoolEvent::TemplateProviderDisconnected { .. }))
            .await
        {
            PoolEvent::TemplateProviderDisconnected { retry_in, .. } => retry_in,
            _ => unreachable!(),
        }
    }
    let connected = |e: &PoolEvent| *e == PoolEvent::TemplateProviderConnected;

    relay.cut();
    let mut waits = vec![];
    for _ in 0..4 {
        waits.push(next_retry(&mut stack).await);
    }
    let min = roles_common::backoff::Backoff::MIN;
    assert_eq!(waits, [min, min * 2, min * 4, min * 8], "doubling");
    relay.release();
    stack.wait_event(connected).await;

    tokio::time::sleep(roles_common::backoff::Backoff::MAX + Duration::from_millis(200)).await;
    relay.cut();
    assert_eq!(next_retry(&mut stack).await, min, "after a link that held");
    relay.release();
    stack.wait_event(connected).await;
    stack.stop().await;
}

#[tokio::test]
async fn devnet_tp_restart_continues_the_chain_from_its_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (tp, shutdown) = start_tp(dir.path(), NBITS_EASY).await;
    let mut blocks = tp.subscribe_blocks();
    let mut client = TdpClient::connect(tp.local_addr()).await;
    for height in 1..=2 {
        let (template, prev) = client.template().await;
        let hash = client.solve_and_submit(&template, &prev).await;
        let block = tokio::time::timeout(WAIT, blocks.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((block.height, block.hash), (height, hash));
    }
    let tip = tp.tip_hash();
    // The new template after block 2 builds on it.
    let (_, prev) = client.template().await;
    assert_eq!(prev.prev_hash.to_array(), tip.to_byte_array());
    shutdown.cancel();
    tp.wait().await;
    drop(client);

    // Restarted on the same state dir: same tip, the next block is height 3.
    let (tp, shutdown) = start_tp(dir.path(), NBITS_EASY).await;
    assert_eq!(tp.height(), 2);
    assert_eq!(tp.tip_hash(), tip);
    let mut blocks = tp.subscribe_blocks();
    let mut client = TdpClient::connect(tp.local_addr()).await;
    let (template, prev) = client.template().await;
    assert_eq!(prev.prev_hash.to_array(), tip.to_byte_array());
    // RequestTransactionData is answered (the block is empty).
    {
        use stratum_core::parsers_sv2::TemplateDistributionOwned as T;
        client
            .conn
            .send(AnyMessageOwned::TemplateDistribution(
                T::RequestTransactionData(
                    stratum_core::template_distribution_sv2::RequestTransactionDataOwned {
                        template_id: template.template_id,
                    },
                ),
            ))
            .await;
        match client.conn.recv().await {
            Ok(Incoming::Sv2(AnyMessageOwned::TemplateDistribution(
                T::RequestTransactionDataSuccess(ok),
            ))) => {
                assert_eq!(ok.template_id, template.template_id);
                assert!(ok.transaction_list.is_empty());
            }
            other => panic!("expected RequestTransactionData.Success, got {other:?}"),
        }
    }
    let hash = client.solve_and_submit(&template, &prev).await;
    let block = tokio::time::timeout(WAIT, blocks.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((block.height, block.hash), (3, hash));
    // A solution for an unknown template changes nothing.
    let (mut template, prev) = client.template().await;
    template.template_id += 1000;
    client.solve_and_submit(&template, &prev).await;
    let (_, prev_after) = (tp.height(), tp.tip_hash());
    assert_eq!(tp.height(), 3);
    assert_eq!(prev_after, block.hash);
    shutdown.cancel();
    tp.wait().await;
}

#[tokio::test]
async fn bad_connections_are_closed_with_a_reason_and_others_keep_mining() {
    let mut stack = Stack::start(NBITS_NEVER).await;
    let mut good = stack.client().await;
    let channel = good.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    good.wait_for_work(channel).await;
    good.mine_one(channel).await.unwrap();

    let closed = |needle: &'static str| move |e: &PoolEvent| matches!(e, PoolEvent::ConnectionClosed { reason, .. } if reason.contains(needle));

    // 1. A client pinning another authority key refuses the pool's handshake.
    let err = MiningClient::connect(stack.pool_addr(), WRONG_PUBLIC_KEY)
        .await
        .err();
    assert!(err.is_some(), "a wrong pinned key must fail the handshake");
    stack
        .wait_event(closed("closed by peer before SetupConnection"))
        .await;
    good.mine_one(channel).await.unwrap();

    // 2. A truncated Noise handshake.
    let mut raw = tokio::net::TcpStream::connect(stack.pool_addr())
        .await
        .unwrap();
    raw.write_all(&[0xAB; 10]).await.unwrap();
    raw.shutdown().await.unwrap();
    stack.wait_event(closed("noise handshake failed")).await;
    good.mine_one(channel).await.unwrap();

    // 2b. Any 64 bytes pass as the initiator's ephemeral key; the bytes after
    // them are not an encrypted frame (the MAC does not verify).
    let mut raw = tokio::net::TcpStream::connect(stack.pool_addr())
        .await
        .unwrap();
    raw.write_all(&[0xAB; 64 + 300]).await.unwrap();
    stack.wait_event(closed("read failed")).await;
    drop(raw);
    good.mine_one(channel).await.unwrap();

    // 3. A mining message before SetupConnection.
    let mut early = MiningClient::connect(stack.pool_addr(), POOL_PUBLIC_KEY)
        .await
        .unwrap();
    early
        .conn
        .send(AnyMessageOwned::Mining(
            MiningOwned::OpenExtendedMiningChannel(
                stratum_core::mining_sv2::OpenExtendedMiningChannelOwned {
                    request_id: 1,
                    user_identity: str0255(IDENTITY),
                    nominal_hash_rate: HASHRATE,
                    max_target: U256Owned::from([0xff; 32]),
                    min_extranonce_size: 8,
                },
            ),
        ))
        .await;
    early.conn.expect_closed().await;
    stack.wait_event(closed("before SetupConnection")).await;
    good.mine_one(channel).await.unwrap();

    // 4. A malformed frame: SubmitSharesExtended with a 3-byte payload.
    let mut bad = stack.client().await;
    bad.conn
        .send_raw(vec![0x00, 0x80, 0x1b, 3, 0, 0, 1, 2, 3])
        .await
        .unwrap();
    bad.conn.expect_closed().await;
    stack.wait_event(closed("malformed frame")).await;
    good.mine_one(channel).await.unwrap();

    // 5. SetupConnection for another subprotocol: SetupConnection.Error, then closed.
    let mut wrong = MiningClient::connect(stack.pool_addr(), POOL_PUBLIC_KEY)
        .await
        .unwrap();
    wrong
        .conn
        .send(setup_connection(Protocol::TemplateDistributionProtocol, 0))
        .await;
    match wrong.conn.recv().await {
        Ok(Incoming::Sv2(AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(
            e,
        )))) => {
            assert_eq!(e.error_code.as_bytes(), b"unsupported-protocol")
        }
        other => panic!("expected SetupConnection.Error, got {other:?}"),
    }
    wrong.conn.expect_closed().await;
    stack
        .wait_event(closed("SetupConnection for protocol"))
        .await;

    // 6. A frame larger than any mining message: closed once the pool has
    // buffered its limit, not the 16 MiB SV2 allows.
    let mut huge = stack.client().await;
    let len = 1 << 20;
    let mut frame = vec![0x00, 0x00, 0x1b];
    frame.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
    frame.resize(6 + len, 0);
    let _ = huge.conn.send_raw(frame).await;
    huge.conn.expect_closed().await;
    stack.wait_event(closed("a frame longer than")).await;

    // The good connection was never touched.
    good.mine_one(channel).await.unwrap();
    assert_eq!(stack.pool.stats().channels_open, 1);
    stack.stop().await;
}

/// A job declaration client declares only when its template changes, which
/// may not happen for a whole block: once set up it may stay quiet past
/// `idle_timeout_secs`.
#[tokio::test]
async fn a_set_up_job_declaration_client_may_stay_quiet() {
    let stack = Stack::start_with(NBITS_NEVER, |c| {
        c.jds = Some(pool::config::JdsSettings {
            listen_address: "127.0.0.1:0".into(),
            ..Default::default()
        });
        c.idle_timeout_secs = 1;
    })
    .await;
    let mut client = JdTestClient::connect(stack.pool.jds_addr().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    client.allocate().await;
    stack.stop().await;
}

/// A pool whose `[jds]` allows no coinbase-only clients refuses their
/// setup (`missing-declare-tx-data-flag`), and sets up full-template ones.
#[tokio::test]
async fn a_pool_may_refuse_coinbase_only_job_declaration_clients() {
    let stack = Stack::start_with(NBITS_NEVER, |c| {
        c.jds = Some(pool::config::JdsSettings {
            listen_address: "127.0.0.1:0".into(),
            allow_coinbase_only: false,
            ..Default::default()
        });
    })
    .await;
    let jds = stack.pool.jds_addr().unwrap();
    let mut coinbase_only = Sv2Conn::connect(jds, POOL_PUBLIC_KEY).await.unwrap();
    let refused = coinbase_only
        .try_setup(Protocol::JobDeclarationProtocol, 0)
        .await
        .unwrap_err();
    assert!(
        refused.contains("missing-declare-tx-data-flag"),
        "{refused}"
    );
    coinbase_only.expect_closed().await;
    let mut full_template = JdTestClient::connect(jds).await;
    full_template.allocate().await;
    stack.stop().await;
}

/// Job declaration clients, whose frames may take megabytes, are let in
/// under limits of their own, apart from mining connections.
#[tokio::test]
async fn job_declaration_clients_have_connection_limits_of_their_own() {
    let stack = Stack::start_with(NBITS_NEVER, |c| {
        c.jds = Some(pool::config::JdsSettings {
            listen_address: "127.0.0.1:0".into(),
            max_connections_per_ip: 1,
            ..Default::default()
        });
        c.max_connections_per_ip = 1;
    })
    .await;
    let jds = stack.pool.jds_addr().unwrap();
    let mut first = JdTestClient::connect(jds).await;
    let mut over = tokio::net::TcpStream::connect(jds).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut over, &mut byte))
        .await
        .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The one mining connection this address may have is its own.
    let mut miner = stack.client().await;
    let channel = miner.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    miner.wait_for_work(channel).await;
    first.allocate().await;
    stack.stop().await;
}

#[tokio::test]
async fn a_template_provider_with_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (tp, tp_shutdown) = start_tp(dir.path(), NBITS_NEVER).await;
    let mut config = pool_config(tp.local_addr());
    config.tp_authority_public_key = public_key(WRONG_PUBLIC_KEY);
    let shutdown = CancellationToken::new();
    let pool = pool::start(config, shutdown.clone(), Default::default())
        .await
        .unwrap();
    let mut events = pool.subscribe_events();
    let event = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(PoolEvent::TemplateProviderDisconnected { reason, .. }) = events.recv().await
            {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    assert!(event.contains("noise handshake failed"), "{event}");
    shutdown.cancel();
    tp_shutdown.cancel();
    pool.wait().await.check("pool");
    tp.wait().await;
}

#[test]
fn the_shipped_configs_load_and_bad_fields_are_named() {
    let pool: pool::PoolConfig = load_shipped("pool.toml");
    assert_eq!(pool.tp_address, "127.0.0.1:8442");
    let tp: devnet_tp::TpConfig = load_shipped("devnet-tp.toml");
    assert_eq!(tp.nbits, devnet_tp::config::DEFAULT_NBITS);
    assert_eq!((tp.coinbase_maturity, tp.mempool_tx_per_minute), (2, 30));
    // jd-client pins the shipped pool and template provider.
    let jdc: jd_client::JdClientConfig = load_shipped("jd-client.toml");
    assert_eq!(
        (
            jdc.pool_authority_public_key.to_string(),
            jdc.tp_authority_public_key.to_string()
        ),
        (
            pool.authority_public_key.to_string(),
            tp.authority_public_key.to_string()
        )
    );
    assert_eq!(jdc.pool_address, "127.0.0.1:34254");
    assert_eq!(
        pool.tp_authority_public_key.to_string(),
        tp.authority_public_key.to_string()
    );

    let dir = tempfile::tempdir().unwrap();
    for (from, to, field) in [
        ("unit_bits = 20", "unit_bits = 99", "unit_bits"),
        (
            "coinbase_reward_script = \"51\"",
            "coinbase_reward_script = \"zz\"",
            "coinbase_reward_script",
        ),
        (
            "max_channels = 65536",
            "max_channelz = 65536",
            "max_channelz",
        ),
    ] {
        let path = shipped_config_with(dir.path(), "pool.toml", &[(from, to)]);
        let err = roles_common::load_config::<pool::PoolConfig>(&path, "HASHPOOL_TEST_POOL_BAD")
            .unwrap_err();
        assert!(err.contains(field) && !err.contains('\n'), "{err}");
    }
}

#[tokio::test]
async fn connections_channels_and_silence_are_bounded_per_downstream() {
    let mut stack = Stack::start_with(NBITS_NEVER, |c| {
        c.max_connections_per_ip = 3;
        c.max_channels_per_connection = 2;
        c.max_channels_per_ip = 3;
        c.idle_timeout_secs = 1;
    })
    .await;
    let closed = |needle: &'static str| move |e: &PoolEvent| matches!(e, PoolEvent::ConnectionClosed { reason, .. } if reason.contains(needle));

    // Two channels on one connection; the third is refused, the connection kept.
    let mut good = stack.client().await;
    let channel = good.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    good.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    assert_eq!(
        good.open_extended(IDENTITY, HASHRATE, 8).await,
        Err("too-many-channels".to_string())
    );
    good.wait_for_work(channel).await;
    good.mine_one(channel).await.unwrap();

    // Three channels over the connections of 127.0.0.1: another connection
    // opens one more, not two; 127.0.0.2 has places of its own.
    let mut second = stack.client().await;
    let third = second.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    assert_eq!(
        second.open_extended(IDENTITY, HASHRATE, 8).await,
        Err("too-many-channels".to_string())
    );
    // A channel closed gives its place back.
    second.close_channel(third).await;
    second.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    let from = [127, 0, 0, 2].into();
    let elsewhere = Sv2Conn::connect_from(from, stack.pool_addr(), POOL_PUBLIC_KEY).await;
    let mut elsewhere = MiningClient::over(elsewhere.unwrap());
    elsewhere.setup_connection(0).await;
    for _ in 0..2 {
        elsewhere
            .open_extended(IDENTITY, HASHRATE, 8)
            .await
            .unwrap();
    }
    drop((second, elsewhere));

    // Set up, no channel, silent: closed after idle_timeout_secs.
    let mut idle = stack.client().await;
    idle.conn.expect_closed().await;
    stack.wait_event(closed("idle")).await;

    // Three connections from 127.0.0.1 at most: the fourth is closed at once.
    let mut held = vec![];
    for _ in 0..2 {
        held.push(
            tokio::net::TcpStream::connect(stack.pool_addr())
                .await
                .unwrap(),
        );
    }
    let mut over = tokio::net::TcpStream::connect(stack.pool_addr())
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut over, &mut byte))
        .await
        .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // One leaves: room again.
    drop(held.pop());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let again = MiningClient::connect(stack.pool_addr(), POOL_PUBLIC_KEY).await;
    assert!(again.is_ok(), "a connection fits again once one closed");

    good.mine_one(channel).await.unwrap();
    stack.stop().await;
}

/// A channel with no share accepted for `idle_channel_timeout_secs` is
/// closed (`idle-channel`) and its place goes to the next channel opened;
/// a channel that mines stays open, on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_channel_is_closed_and_its_place_goes_to_the_next() {
    let stack = Stack::start_with(NBITS_NEVER, |c| {
        c.max_channels = 2;
        c.idle_channel_timeout_secs = 3;
    })
    .await;
    let mut client = stack.client().await;
    let mining = client.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    let idle = client.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    let idle_opened = std::time::Instant::now();
    assert_eq!(
        client.open_extended(IDENTITY, HASHRATE, 8).await,
        Err("channel-capacity-exhausted".to_string())
    );
    client.wait_for_work(mining).await;

    // Mine on one channel until the pool closes the other, then a while longer.
    let closed_by_pool = |seen: &[Incoming]| -> Vec<(u32, String)> {
        seen.iter()
            .filter_map(|m| match m {
                Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::CloseChannel(c))) => Some((
                    c.channel_id,
                    String::from_utf8_lossy(c.reason_code.as_bytes()).into_owned(),
                )),
                _ => None,
            })
            .collect()
    };
    let started = std::time::Instant::now();
    while closed_by_pool(&client.seen).is_empty() {
        assert!(started.elapsed() < WAIT, "the idle channel was not closed");
        client.mine_one(mining).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let closed_at = std::time::Instant::now();
    while closed_at.elapsed() < Duration::from_secs(4) {
        client.mine_one(mining).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        closed_by_pool(&client.seen),
        vec![(idle, "idle-channel".to_string())]
    );
    assert!(
        closed_at - idle_opened >= Duration::from_secs(3),
        "closed before its timeout"
    );

    // The freed place takes a new channel, which mines.
    let next = client.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    client.wait_for_work(next).await;
    client.mine_one(next).await.unwrap();
    assert_eq!(stack.pool.stats().channels_open, 2);
    stack.stop().await;
}

/// A connection whose last channel the pool closes as idle has the whole
/// `idle_timeout_secs` to open another before it is closed as idle itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_channel_is_closed_as_idle_keeps_its_whole_idle_timeout() {
    let mut stack = Stack::start_with(NBITS_NEVER, |c| {
        c.idle_channel_timeout_secs = 2;
        c.idle_timeout_secs = 2;
    })
    .await;
    let mut client = stack.client().await;
    let channel = client.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    let closed = client
        .wait_for(|m| match m {
            Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::CloseChannel(c))) => {
                Some(c.channel_id)
            }
            _ => None,
        })
        .await;
    let channel_closed_at = std::time::Instant::now();
    assert_eq!(closed, channel);
    stack
        .wait_event(
            |e| matches!(e, PoolEvent::ConnectionClosed { reason, .. } if reason.contains("idle:")),
        )
        .await;
    // The pool counts from its first check after the close, which may come
    // just before the client reads it: a margin of one check (0.5 s).
    let idle_for = channel_closed_at.elapsed();
    assert!(
        idle_for >= Duration::from_millis(1500),
        "the connection was closed {idle_for:?} after its channel"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_that_stops_reading_is_closed_after_the_write_timeout() {
    let mut stack = Stack::start_with(NBITS_NEVER, |c| {
        c.write_timeout_secs = 1;
        c.max_channels_per_connection = 60_000;
    })
    .await;
    // A small receive buffer, so the pool's writes block soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(stack.pool_addr()).await.unwrap();
    let mut client = MiningClient::over(Sv2Conn::over(stream, POOL_PUBLIC_KEY).await.unwrap());
    client.setup_connection(0).await;
    // Channels opened, never reading an answer (each brings a job: the
    // largest answer a downstream can ask for).
    let started = std::time::Instant::now();
    let flood = tokio::spawn(async move {
        let mut sent = 0;
        while client
            .try_open_extended(IDENTITY, HASHRATE, 8)
            .await
            .is_ok()
        {
            sent += 1;
        }
        sent
    });
    // Loopback socket buffers hold a few MB: filling them takes a while.
    let closed = wait_broadcast(
        &mut stack.events,
        Duration::from_secs(120),
        "the pool closing a peer that does not read",
        |e| matches!(e, PoolEvent::ConnectionClosed { .. }),
    )
    .await;
    let PoolEvent::ConnectionClosed { reason, .. } = closed else {
        unreachable!()
    };
    assert!(reason.contains("took no message"), "{reason}");
    let sent = flood.await.unwrap();
    println!(
        "closed after {sent} open requests in {:?}",
        started.elapsed()
    );
    stack.stop().await;
}

#[tokio::test]
async fn no_channel_gets_a_target_easier_than_the_minimum_difficulty() {
    let stack = Stack::start_with(NBITS_NEVER, |c| c.min_share_difficulty = 0.001).await;
    let mut config = pool_config(stack.pool_addr());
    config.min_share_difficulty = 0.001;
    let floor = config.easiest_target().unwrap();
    let mut client = stack.client().await;
    // 10 H/s would be ~100 hashes a share; the floor is ~4.3 M.
    let channel = client.open_extended(IDENTITY, HASHRATE, 8).await.unwrap();
    assert_eq!(client.channels[&channel].target(), floor);
    let standard = client.open_standard(IDENTITY, 0.0).await.unwrap();
    assert_eq!(client.channels[&standard].target(), floor);
    stack.stop().await;
}

/// The pool benchmarks' load generator, pointed at a pool by address and
/// authority key (as bench/side-by-side.sh points it at SRI's pool_sv2):
/// every connection opens its channel and gets shares accepted, each
/// acknowledged in a batch with the one before it (as a pool's
/// `share_batch_size` does), which counts both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_loads_a_pool_named_by_address_and_authority_key() {
    let stack = Stack::start_with(NBITS_NEVER, |c| {
        c.shares_per_minute = 100_000.0;
        c.share_batch_size = 2;
    })
    .await;
    let target = LoadTarget {
        address: stack.pool_addr(),
        authority_key: POOL_PUBLIC_KEY.to_string(),
        user_identity: format!("{LOCKING_KEY}.load"),
        // ~16 hashes a share at 100,000 shares a minute.
        nominal_hashrate: 16.0 * 100_000.0 / 60.0,
        ehash: false,
    };
    let figures = run_load(&target, 3, 2, Duration::from_secs(1), tokio::time::sleep).await;
    println!("{figures:?}");
    assert!(figures.accepted_per_sec > 0.0, "{figures:?}");
    assert_eq!(figures.rejected(), 0);
    assert!(figures.p50_ms <= figures.p99_ms);
    // The pool counted them (the warm-up second's too).
    let counted = stack.pool.stats().shares_accepted as f64;
    assert!(counted >= figures.accepted_per_sec, "{counted}");
    // A wrong authority key is refused at the Noise handshake.
    let wrong = MiningClient::connect(stack.pool_addr(), WRONG_PUBLIC_KEY).await;
    assert!(wrong.is_err());
    stack.stop().await;
}

/// A channel renewed on a new extranonce prefix (once three quarters of
/// its duplicate-detection budget are used: 5,400 shares at the pool's 6
/// shares a minute) is followed by the load generator: only the shares in
/// flight when the prefix changed can be refused, as stale (their jobs are
/// retired; the new jobs' ids follow the old ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_follows_a_channel_renewed_on_a_new_extranonce_prefix() {
    let stack = Stack::start(NBITS_NEVER).await;
    let target = LoadTarget {
        address: stack.pool_addr(),
        authority_key: POOL_PUBLIC_KEY.to_string(),
        user_identity: format!("{LOCKING_KEY}.load"),
        // ~16 hashes a share at 6 shares a minute.
        nominal_hashrate: 1.6,
        ehash: false,
    };
    let window = 4;
    let pool = &stack.pool;
    let past_renewal = |_| async {
        while pool.stats().shares_accepted < 6_000 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let figures = tokio::time::timeout(
        Duration::from_secs(120),
        run_load(&target, 1, window, Duration::ZERO, past_renewal),
    )
    .await
    .expect("6,000 shares accepted within two minutes");
    println!("{figures:?}");
    assert!(figures.rejected() <= window as u64, "{figures:?}");
    assert!(
        figures.refusals.keys().all(|code| code == "stale-share"),
        "{figures:?}"
    );
    assert_eq!(figures.rejected(), pool.stats().shares_rejected);
    stack.stop().await;
}
