//! The translator's wallet swapping its many proofs into few, against a
//! real mint: nothing lost to a lost answer or to proofs spent elsewhere.

use super::mint_proxies::answer_dropping_proxy;
use super::wallet::{
    mint_link_and_store, open_wallet, pending_quotes, send_to_fresh_wallet, wallet_at,
};
use super::*;

/// Mints the store's pending quotes one per batch: a proof per quote of a
/// power of two.
async fn mint_one_per_batch(wallet: &EhashWallet, store: &QuoteStore) {
    wallet.recover().await.unwrap();
    while !store
        .pending(&wallet.locking_key().to_string(), 1)
        .unwrap()
        .is_empty()
    {
        let round = wallet.mint_pending(store, 1).await.unwrap();
        assert_eq!(round.left, 0, "{round:?}");
    }
}

/// Every row of the wallet's proof table, whatever its state.
pub(super) async fn proof_rows(wallet: &EhashWallet) -> usize {
    let rows = wallet.cdk().localstore.get_proofs(None, None, None, None);
    rows.await.unwrap().len()
}

/// The fewest proofs that carry `amount`.
pub(super) fn fewest(amount: u64) -> usize {
    amount.count_ones() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_proofs_are_swapped_into_the_fewest_of_their_total_and_spent_rows_deleted() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let wallet = open_wallet(&mint, dir.path()).await;
    let key = wallet.locking_key();
    let total = pending_quotes(&mut link, &store, key, (0..40).map(|i| 1 + i % 4)).await;
    mint_one_per_batch(&wallet, &store).await;
    assert_eq!(proof_rows(&wallet).await, 40, "a proof per quote");

    let kept = wallet.consolidate(40).await.unwrap();
    let unchanged = Holdings {
        balance: total,
        proofs: 40,
        swapped: 0,
    };
    assert_eq!(kept, unchanged, "not above the bound: nothing swapped");

    let kept = wallet.consolidate(16).await.unwrap();
    let consolidated = Holdings {
        balance: total,
        proofs: fewest(total),
        swapped: 40,
    };
    assert_eq!(kept, consolidated);
    assert_eq!(wallet.balance().await.unwrap(), total);
    assert_eq!(
        proof_rows(&wallet).await,
        fewest(total),
        "the spent proofs' rows are deleted"
    );
    let again = wallet.consolidate(0).await.unwrap();
    assert_eq!(again.swapped, 0, "already the fewest: {again:?}");

    // The mint signed the new proofs: a part is received elsewhere, the
    // change stays.
    send_to_fresh_wallet(&wallet, &store, &mint.running.http_url(), 7).await;
    assert_eq!(wallet.balance().await.unwrap(), total - 7);
    mint.stop().await;
}

/// The seed restored in another wallet spends some of the proofs: the
/// wallet, asking the mint their states before it swaps, drops exactly
/// those and consolidates the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_spent_by_another_wallet_of_the_seed_are_dropped_and_the_rest_consolidated() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let wallet = open_wallet(&mint, dir.path()).await;
    let key = wallet.locking_key();
    let total = pending_quotes(&mut link, &store, key, (0..12).map(|i| 1 + i % 4)).await;
    mint_one_per_batch(&wallet, &store).await;

    let twin_dir = tempfile::tempdir().unwrap();
    let twin = open_wallet(&mint, twin_dir.path()).await;
    twin.cdk().restore().await.unwrap();
    let restored = twin.cdk().get_unspent_proofs().await.unwrap();
    assert_eq!(
        restored.len(),
        12,
        "the seed's proofs restored from the mint"
    );
    let spent: Vec<_> = restored.into_iter().take(5).collect();
    let gone: u64 = spent.iter().map(|p| u64::from(p.amount)).sum();
    // Its own outputs from counters the first wallet will not reach, as
    // a wallet restored long ago that has minted since.
    let keyset = spent[0].keyset_id;
    let store_of_twin = &twin.cdk().localstore;
    store_of_twin
        .increment_keyset_counter(&keyset, 1000)
        .await
        .unwrap();
    twin.cdk()
        .swap(None, SplitTarget::default(), spent, None, false, false)
        .await
        .unwrap();

    let kept = wallet.consolidate(4).await.unwrap();
    let left = total - gone;
    let consolidated = Holdings {
        balance: left,
        proofs: fewest(left),
        swapped: 7,
    };
    assert_eq!(kept, consolidated);
    assert_eq!(wallet.balance().await.unwrap(), left);
    assert_eq!(proof_rows(&wallet).await, fewest(left));
    send_to_fresh_wallet(&wallet, &store, &mint.running.http_url(), left).await;
    mint.stop().await;
}

/// The mint swaps and its answer never reaches the wallet: cdk keeps the
/// inputs reserved (out of the balance), and the next consolidation first
/// recovers the swap's outputs from the mint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consolidating_swap_whose_answer_was_lost_is_recovered_by_the_next() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let (proxy, dropped) = answer_dropping_proxy(mint.running.http_addr, &["/v1/swap"]).await;
    let url = format!("http://{proxy}");
    let wallet = wallet_at(&url, &dir.path().join("wallet.sqlite")).await;
    let key = wallet.locking_key();
    let total = pending_quotes(&mut link, &store, key, (0..12).map(|i| 1 + i % 4)).await;
    mint_one_per_batch(&wallet, &store).await;

    let kept = wallet.consolidate(4).await.unwrap();
    assert_eq!(*dropped.lock().unwrap(), ["/v1/swap"]);
    assert_eq!(
        (kept.balance, kept.swapped),
        (0, 0),
        "the swap's inputs are reserved, its outcome unknown"
    );

    let kept = wallet.consolidate(4).await.unwrap();
    let recovered = Holdings {
        balance: total,
        proofs: fewest(total),
        swapped: 0,
    };
    assert_eq!(kept, recovered, "the swap's outputs, from the mint");
    assert_eq!(proof_rows(&wallet).await, fewest(total));
    send_to_fresh_wallet(&wallet, &store, &url, total).await;
    mint.stop().await;
}

/// More proofs than one swap may spend: swapped in swaps of at most the
/// mint's `max_inputs`, then their outputs once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_proofs_than_one_swap_takes_are_consolidated_in_passes() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let wallet = open_wallet(&mint, dir.path()).await;
    let key = wallet.locking_key();
    let started = Instant::now();
    let total = pending_quotes(&mut link, &store, key, (0..1100).map(|i| 1 + i % 4)).await;
    eprintln!("quoted in {:?}", started.elapsed());
    mint_one_per_batch(&wallet, &store).await;
    eprintln!("minted in {:?}", started.elapsed());
    let kept = wallet.consolidate(0).await.unwrap();
    eprintln!("consolidated in {:?}", started.elapsed());
    assert!(kept.swapped > 1100, "two passes: {kept:?}");
    let consolidated = Holdings {
        balance: total,
        proofs: fewest(total),
        swapped: kept.swapped,
    };
    assert_eq!(kept, consolidated);
    assert_eq!(proof_rows(&wallet).await, fewest(total));
    mint.stop().await;
}
