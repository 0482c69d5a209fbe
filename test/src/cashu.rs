//! The miner's side of ehash: NUT-20 keys and a cdk wallet minting quotes.

/// A miner's NUT-20 key pair: the cdk secret key and its locking key.
pub fn miner_key() -> (cdk::nuts::SecretKey, ehash::LockingKey) {
    let secret = cdk::nuts::SecretKey::generate();
    let locking =
        ehash::LockingKey::from_bytes(&secret.public_key().to_bytes()).expect("valid key");
    (secret, locking)
}

/// A cdk wallet for the ehash unit of the mint at `url`.
pub fn wallet(url: &str) -> cdk::wallet::Wallet {
    let db = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(cdk_sqlite::wallet::memory::empty())
    })
    .expect("wallet db");
    cdk::wallet::WalletBuilder::new()
        .mint_url(url.parse().expect("mint url"))
        .unit(cdk::nuts::CurrencyUnit::custom(ehash::constants::UNIT))
        .localstore(std::sync::Arc::new(db))
        .seed(
            rand::random::<[u8; 32]>()
                .repeat(2)
                .try_into()
                .expect("64 bytes"),
        )
        .without_rate_limiting()
        .build()
        .expect("wallet")
}

/// Mints `quote_ids` (NUT-29 batch) with `key`; returns the amount minted.
pub async fn mint_quotes(
    wallet: &cdk::wallet::Wallet,
    quote_ids: &[String],
    key: &cdk::nuts::SecretKey,
) -> Result<u64, String> {
    let method = cdk::nuts::PaymentMethod::Custom(ehash::constants::PAYMENT_METHOD.into());
    for id in quote_ids {
        wallet
            .fetch_mint_quote(id, Some(method.clone()))
            .await
            .map_err(|e| e.to_string())?;
    }
    let ids: Vec<&str> = quote_ids.iter().map(String::as_str).collect();
    let keys = quote_ids
        .iter()
        .map(|id| (id.clone(), key.clone()))
        .collect();
    let proofs = wallet
        .batch_mint(&ids, translator::wallet::fewest_proofs(), None, Some(keys))
        .await
        .map_err(|e| e.to_string())?;
    Ok(proofs.iter().map(|p| u64::from(p.amount)).sum())
}
