//! The translator's wallet against a mint whose answers come late or not
//! at all: a batch request the wallet gave up on may still be signed, and
//! its ehash must end in the wallet all the same, each quote once.

use super::mint_proxies::{LateDelivery, NextRequest};
use super::wallet::{each_issued_once_to, mint_link_and_store, open_wallet, pending_quotes, seed};
use super::*;

/// Six paid quotes pending for a wallet that gives up on a request after
/// [`BehindLateProxy::TIMEOUT`], its batch requests through a
/// [`LateDelivery`] proxy.
struct BehindLateProxy {
    mint: TestMint,
    link: PoolClient,
    dir: tempfile::TempDir,
    store: QuoteStore,
    proxy: LateDelivery,
    wallet: EhashWallet,
    url: String,
    /// The quotes' total.
    total: u64,
}

impl BehindLateProxy {
    /// Long enough for any answer on a loaded machine; the held request
    /// waits it out.
    const TIMEOUT: Duration = Duration::from_secs(5);

    async fn start(next: NextRequest) -> Self {
        let (mint, mut link, dir, store) = mint_link_and_store().await;
        let proxy = LateDelivery::start(mint.running.http_addr, "/v1/mint/ehash/batch", next).await;
        let url = format!("http://{}", proxy.addr);
        let wallet = Self::wallet(&url, dir.path()).await;
        let key = wallet.locking_key();
        let total = pending_quotes(&mut link, &store, key, 1..=6).await;
        wallet.recover().await.unwrap();
        Self {
            mint,
            link,
            dir,
            store,
            proxy,
            wallet,
            url,
            total,
        }
    }

    /// Minting rounds (up to `rounds`) until none is left: every quote
    /// minted once, to this wallet, none found issued to another.
    async fn each_minted_once(&mut self, rounds: usize) {
        let (minted, issued_elsewhere) = mint_rounds(&self.wallet, &self.store, rounds).await;
        assert_eq!(issued_elsewhere, 0, "no quote taken for another wallet's");
        assert_eq!(minted, self.total);
        let (wallet, store, link) = (&self.wallet, &self.store, &mut self.link);
        each_issued_once_to(wallet, store, link, &self.url, (6, self.total)).await;
    }

    /// The wallet (the test mnemonic) of the mint behind `url`, its
    /// database in `dir`.
    async fn wallet(url: &str, dir: &Path) -> EhashWallet {
        let db = dir.join("wallet.sqlite");
        let wallet = EhashWallet::open(url, Self::TIMEOUT, &db, seed());
        wallet.await.unwrap()
    }
}

/// Up to `rounds` minting rounds, until none is left: the amount minted,
/// and how many quotes were found issued to another wallet.
async fn mint_rounds(wallet: &EhashWallet, store: &QuoteStore, rounds: usize) -> (u64, usize) {
    let (mut minted, mut issued_elsewhere) = (0, 0);
    for _ in 0..rounds {
        let round = tokio::time::timeout(Duration::from_secs(60), wallet.mint_pending(store, 50))
            .await
            .expect("the wallet stops waiting for an answer")
            .unwrap();
        minted += round.amount;
        issued_elsewhere += round.already_issued.len();
        if round.left == 0 {
            break;
        }
    }
    (minted, issued_elsewhere)
}

/// The wallet stops waiting for a batch (its timeout), finds nothing signed
/// yet, and the mint signs the first request only then, as it reaches it
/// late (behind a proxy that gave up on it, say): the batch is sent again
/// as it was, never with other outputs, so the proofs of what the mint
/// signed are the wallet's. Minted with other outputs, the quotes would be
/// found issued, and their ehash lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_mint_signs_after_the_wallet_stopped_waiting_is_minted_from_its_own_outputs() {
    let mut t = BehindLateProxy::start(NextRequest::Forward).await;
    t.each_minted_once(3).await;
    assert_eq!(
        t.proxy.answered(),
        ["HTTP/1.1 200 OK"],
        "the mint signed the first request, late"
    );
    t.mint.stop().await;
}

/// As above, but the mint refuses the copy for a passing reason (its
/// database busy) while the first request is still on its way, and signs
/// the first after: the batch stays open, and the next round finds it
/// signed. Closed on that refusal, its quotes would be minted with other
/// outputs and found issued, their ehash lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_copy_the_mint_refuses_for_a_passing_reason_waits_for_its_first_request() {
    let mut t = BehindLateProxy::start(NextRequest::RefuseAsBusy).await;
    let first = t.wallet.mint_pending(&t.store, 50).await.unwrap();
    assert_eq!((first.minted.len(), first.left), (0, 6), "{first:?}");
    t.proxy.deliver_held().await;
    assert_eq!(t.proxy.answered(), ["HTTP/1.1 200 OK"], "signed late");
    t.each_minted_once(3).await;
    t.mint.stop().await;
}

/// The copy of a batch whose first request got no answer is refused
/// because its quotes were issued, here to another wallet of the key: the
/// first can never be signed now, so the batch closes at once, and the
/// quotes are found issued elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_copy_is_refused_as_issued_closes_at_once() {
    let t = BehindLateProxy::start(NextRequest::Forward).await;
    let records = t.store.all().unwrap();
    let ids: Vec<&str> = records.iter().map(|r| r.quote_id.as_str()).collect();
    let elsewhere = hashpool_tests::wallet(&t.mint.running.http_url());
    let issued = mint_with(&elsewhere, &ids, &locking_secret(&seed())).await;
    assert_eq!(issued, Ok(t.total));

    let (minted, issued_elsewhere) = mint_rounds(&t.wallet, &t.store, 2).await;
    assert_eq!((minted, issued_elsewhere), (0, 6));
    assert_eq!(t.proxy.answered().len(), 1, "the first refused, late");
    assert!(t.store.batches().unwrap().is_empty(), "closed");
    assert_eq!(t.store.totals().unwrap().minted, (6, t.total));
    t.mint.stop().await;
}

/// A batch whose copy the mint keeps refusing for a passing reason closes
/// once its first request, never answered, was sent the hold ago (here by
/// the store's time, for a restarted wallet): its quotes are pending again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_for_a_passing_reason_closes_once_no_request_of_it_can_reach_the_mint() {
    let t = BehindLateProxy::start(NextRequest::RefuseAsBusy).await;
    let first = t.wallet.mint_pending(&t.store, 50).await.unwrap();
    assert_eq!(first.minted.len(), 0, "{first:?}");
    let open = t.store.batches().unwrap();
    assert_eq!(open.len(), 1, "left open");
    let hold = BehindLateProxy::TIMEOUT.as_secs() * 10;
    let long_ago = roles_common::unix_secs() - hold;
    t.store.unanswered(open[0].id, long_ago).unwrap();

    let restarted = BehindLateProxy::wallet(&t.url, t.dir.path()).await;
    let round = restarted.mint_pending(&t.store, 50).await.unwrap();
    assert_eq!(round.minted.len(), 0, "{round:?}");
    assert!(t.store.batches().unwrap().is_empty(), "closed");
    let all = t.store.all().unwrap();
    let pending = all.iter().all(|r| r.state == QuoteState::Pending);
    assert!(pending, "{all:?}");
    assert!(
        t.proxy.answered().is_empty(),
        "the first never reached the mint"
    );
    t.mint.stop().await;
}

/// A mint that takes requests and never tells what it signed costs a
/// round one timeout, not one for each batch left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_too_slow_to_tell_what_it_signed_costs_a_round_one_timeout() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let proxy =
        LateDelivery::start(mint.running.http_addr, "/v1/restore", NextRequest::Swallow).await;
    // Recovered on the mint itself: the proxy swallows every restore.
    open_wallet(&mint, dir.path())
        .await
        .recover()
        .await
        .unwrap();
    let wallet = BehindLateProxy::wallet(&format!("http://{}", proxy.addr), dir.path()).await;
    let key = wallet.locking_key().to_string();
    pending_quotes(&mut link, &store, wallet.locking_key(), 1..=3).await;
    // Three batches left open (by a crash, say), a quote each.
    let keyset = wallet.cdk().active_keyset().await.unwrap().id.to_string();
    let mut open: Vec<translator::quotes::MintBatch> = store
        .pending(&key, 3)
        .unwrap()
        .into_iter()
        .zip(0..)
        .map(|(r, i)| translator::quotes::MintBatch {
            id: 0,
            keyset_id: keyset.clone(),
            counter_start: 100 * i,
            quotes: vec![(r.quote_id, r.amount)],
            unanswered_since: 0,
        })
        .collect();
    store.open_batches(&mut open).unwrap();

    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert_eq!(round.minted.len(), 0, "{round:?}");
    assert_eq!(proxy.seen(), 1, "one asked, the others wait");
    assert_eq!(store.batches().unwrap().len(), 3, "all open");
    mint.stop().await;
}
