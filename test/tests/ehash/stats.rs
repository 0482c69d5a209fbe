//! What the pool publishes to its stats service about the ehash flow.

use super::*;

fn count(received: &[StatsMessage], pred: impl Fn(&StatsMessage) -> bool) -> usize {
    received.iter().filter(|m| pred(m)).count()
}

fn link_up(received: &[StatsMessage], which: u8) -> bool {
    received
        .iter()
        .any(|m| matches!(m, StatsMessage::LinkStatus(l) if l.link == which && l.up))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_publishes_every_share_quote_channel_link_and_the_mint_stats() {
    let sink = StatsSink::start().await;
    let stack = EhashStack::start("annotate", |c| c.stats = Some(sink.settings())).await;
    let (_, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;
    let shares = mine(&mut client, channel, 3).await;
    // The same share again is refused (duplicate).
    let again = client.valid_share(channel, false);
    client.submit_and_wait(channel, &again).await.unwrap();
    assert!(client.submit_and_wait(channel, &again).await.is_err());
    client.notifications(4).await;
    let pool_stats = stack.pool().stats();
    assert_eq!(
        (pool_stats.shares_accepted, pool_stats.shares_rejected),
        (4, 1)
    );
    let mint = &stack.mint.as_ref().unwrap().0.mint;
    let quotes = mint.mint_quotes().await.unwrap().len();
    assert_eq!(quotes, 4);

    let quoted = total(&shares) + ehash::work_hashes(client.channels[&channel].target());
    let received = sink
        .wait_until("every share, quote and the mint's totals", |r| {
            count(r, |m| matches!(m, StatsMessage::ShareSubmitted(_))) == 5
                && count(r, |m| matches!(m, StatsMessage::QuoteCreated(_))) == quotes
                && r.iter()
                    .any(|m| matches!(m, StatsMessage::MintStats(s) if s.ehash_quoted == quoted))
        })
        .await;
    match &received[0] {
        StatsMessage::PublisherHello(h) => assert_eq!(h.role, stats_sv2::role::POOL),
        other => panic!("expected the hello first, got {other:?}"),
    }
    let accepted: Vec<u64> = received
        .iter()
        .filter_map(|m| match m {
            StatsMessage::ShareSubmitted(s) if s.accepted => Some(s.work),
            _ => None,
        })
        .collect();
    assert_eq!(accepted.len() as u64, pool_stats.shares_accepted);
    assert_eq!(accepted.iter().sum::<u64>(), quoted, "work of each target");
    assert_eq!(
        count(
            &received,
            |m| matches!(m, StatsMessage::ShareSubmitted(s) if !s.accepted && s.work == 0)
        ),
        1
    );
    let quote_amounts: u64 = received
        .iter()
        .filter_map(|m| match m {
            StatsMessage::QuoteCreated(q) => {
                assert_eq!(q.channel_id, channel);
                Some(q.amount)
            }
            _ => None,
        })
        .sum();
    assert_eq!(quote_amounts, quoted);
    assert!(link_up(&received, stats_sv2::link::TEMPLATE_PROVIDER));
    assert!(link_up(&received, stats_sv2::link::MINT));
    assert!(received
        .iter()
        .any(|m| matches!(m, StatsMessage::ChannelOpened(c) if c.channel_id == channel)));
    let downstream = received
        .iter()
        .find_map(|m| match m {
            StatsMessage::DownstreamConnected(d) => Some(d.downstream_id),
            _ => None,
        })
        .expect("the downstream was announced");

    // The downstream leaves: its channel closes with it.
    drop(client);
    sink.wait_until("the downstream leaving", |r| {
        r.iter().any(|m| matches!(m, StatsMessage::ChannelClosed(c) if c.channel_id == channel && c.downstream_id == downstream))
            && r.iter().any(|m| matches!(m, StatsMessage::DownstreamDisconnected(d) if d.downstream_id == downstream))
    })
    .await;
    assert_eq!(stack.pool().stats_publisher().dropped(), 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mining_goes_on_while_the_stats_service_is_away_and_the_overflow_is_counted() {
    let settings = dead_stats_settings(2).await;
    let stack = EhashStack::start("annotate", |c| c.stats = Some(settings)).await;
    let (_, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;
    // Link up, downstream, channel: the tiny queue is full already.
    let publisher = stack.pool().stats_publisher();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while publisher.dropped() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "nothing dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = publisher.dropped();
    let shares = mine(&mut client, channel, 3).await;
    assert_eq!(shares.len(), 3);
    assert_eq!(stack.pool().stats().shares_accepted, 3);
    assert!(
        publisher.dropped() >= before + 3,
        "each share's event pushes an older one out: {before} -> {}",
        publisher.dropped()
    );
    assert!(!publisher.is_connected());
    stack.stop().await;
}
