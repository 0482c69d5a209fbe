//! The mint's signed quote lookup by locking key, as a wallet uses it: every
//! quote locked to the wallet's key, listed with no pool or proxy to trust,
//! and recorded for minting when the store never heard of it.

use cdk::nuts::SecretKey;
use ehash::lookup::{
    sign_request, Cursor, LookupErrorBody, LookupFields, LookupResponse, QuoteEntry,
    QuoteState as LookupState, MAX_LIMIT, NONCE_LEN,
};
use stratum_core::bitcoin::secp256k1::PublicKey;
use tracing::warn;

use super::{EhashWallet, WalletError};
use crate::quotes::{QuoteRecord, QuoteState, QuoteStore};

/// How long one quote-lookup request may take.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Most characters of a refusal body quoted in an error.
const MAX_REFUSAL_TEXT: usize = 300;

impl EhashWallet {
    /// Records the quotes the mint holds for this wallet's key, paid and
    /// not issued, created before `created_before` (unix seconds), that
    /// `store` does not know (their notification never arrived), listed
    /// from `from` on (the start when `None`). How many, and where the next
    /// look-up may start: it sees every quote this one left out.
    pub async fn record_from_mint(
        &self,
        store: &QuoteStore,
        from: Option<Cursor>,
        created_before: u64,
    ) -> Result<(usize, Option<Cursor>), WalletError> {
        let key = self.key.to_string();
        let mut missing = vec![];
        let (listed, resume) = self.list_at_mint(from, created_before).await?;
        for q in listed {
            if q.state == LookupState::Paid
                && q.created_time < created_before
                && store.get(&q.quote)?.is_none()
            {
                missing.push(QuoteRecord {
                    quote_id: q.quote,
                    share_hash: String::new(),
                    amount: q.amount,
                    locking_key: key.clone(),
                    keyset_id: String::new(),
                    channel_id: 0,
                    sequence_number: 0,
                    state: QuoteState::Pending,
                    created_at: q.created_time,
                    last_error: Some("found at the mint, not notified".into()),
                });
            }
        }
        if !missing.is_empty() {
            warn!(
                quotes = missing.len(),
                key, "the mint holds quotes of this key that were never recorded: recording them"
            );
            store.record(&missing, &[])?;
        }
        Ok((missing.len(), resume))
    }

    /// Every quote the mint holds locked to this wallet's key, in creation
    /// order, listed with the signed lookup by locking key (`ehash::lookup`):
    /// no pool or proxy has to be trusted for the list. The requests are
    /// signed for the mint's NUT-06 `pubkey`; a mint that advertises none
    /// cannot serve them.
    pub async fn quotes_at_mint(&self) -> Result<Vec<QuoteEntry>, WalletError> {
        Ok(self.list_at_mint(None, u64::MAX).await?.0)
    }

    /// The key's quotes from `from` on, up to the first created at or after
    /// `created_before`: the list is in creation order, so the rest are
    /// younger (and a list that grows faster than it is read still ends).
    /// Also where to resume: the start of the page that held that first
    /// younger quote, or of the last page.
    async fn list_at_mint(
        &self,
        from: Option<Cursor>,
        created_before: u64,
    ) -> Result<(Vec<QuoteEntry>, Option<Cursor>), WalletError> {
        let mint_key = self.mint_info_pubkey().await?;
        let url = self
            .wallet
            .mint_url
            .join_paths(&[
                "v1",
                "mint",
                "quote",
                ehash::constants::PAYMENT_METHOD,
                "pubkey",
            ])
            .map_err(|e| WalletError::Other(format!("mint_url: {e}")))?;
        let http = cdk::http_client::HttpClient::new();
        let own_key = self.key.to_string();
        let mut quotes = Vec::new();
        let mut cursor = from;
        loop {
            let page = self
                .lookup_page(&http, url.as_str(), &mint_key, cursor)
                .await?;
            if page.quotes.len() > MAX_LIMIT as usize
                || page.quotes.iter().any(|q| q.pubkey != own_key)
            {
                return Err(WalletError::Other(
                    "the mint's quote lookup answered with quotes not asked for".into(),
                ));
            }
            if let Some(young) = page
                .quotes
                .iter()
                .position(|q| q.created_time >= created_before)
            {
                quotes.extend(page.quotes.into_iter().take(young));
                return Ok((quotes, cursor));
            }
            let empty = page.quotes.is_empty();
            quotes.extend(page.quotes);
            let Some(next) = page.next_cursor else {
                return Ok((quotes, cursor));
            };
            let next: Cursor = next
                .parse()
                .map_err(|e| WalletError::Other(format!("the mint's next cursor: {e}")))?;
            // Each page must move forward, so a faulty mint cannot loop us.
            if empty || cursor.is_some_and(|c| next <= c) {
                return Err(WalletError::Other(
                    "the mint's quote lookup does not advance".into(),
                ));
            }
            cursor = Some(next);
        }
    }

    /// The mint's NUT-06 `pubkey`, which lookup signatures are bound to.
    async fn mint_info_pubkey(&self) -> Result<PublicKey, WalletError> {
        let info = self
            .wallet
            .fetch_mint_info()
            .await?
            .ok_or_else(|| WalletError::Other("the mint sent no info".into()))?;
        info.pubkey.map(|key| *key).ok_or_else(|| {
            WalletError::Other("the mint advertises no pubkey: it serves no quote lookup".into())
        })
    }

    /// One page of this wallet's quotes from `cursor` on, signed afresh.
    async fn lookup_page(
        &self,
        http: &cdk::http_client::HttpClient,
        url: &str,
        mint_key: &PublicKey,
        cursor: Option<Cursor>,
    ) -> Result<LookupResponse, WalletError> {
        // 16 bytes of cdk's CSPRNG (the crate links no other).
        let random = SecretKey::generate().to_secret_bytes();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&random[..NONCE_LEN]);
        let fields = LookupFields {
            method: ehash::constants::PAYMENT_METHOD,
            timestamp: roles_common::unix_secs(),
            nonce,
            limit: Some(MAX_LIMIT),
            cursor,
        };
        let request = sign_request(&[*self.secret], mint_key, &fields);
        let unreachable = |why: String| WalletError::Cdk(cdk::Error::HttpError(None, why));
        let response = tokio::time::timeout(LOOKUP_TIMEOUT, http.post(url).json(&request).send())
            .await
            .map_err(|_| unreachable("quote lookup timed out".into()))?
            .map_err(|e| unreachable(format!("quote lookup: {e}")))?;
        let status = response.status();
        let refused = |why: String| WalletError::Cdk(cdk::Error::HttpError(Some(status), why));
        if !response.is_success() {
            let body = response.body_lossy();
            let why = match serde_json::from_str::<LookupErrorBody>(&body) {
                Ok(e) => format!("{}: {}", e.error, e.detail),
                Err(_) => body.chars().take(MAX_REFUSAL_TEXT).collect(),
            };
            return Err(refused(format!("quote lookup refused: {why}")));
        }
        response
            .json()
            .await
            .map_err(|e| refused(format!("quote lookup answer: {e}")))
    }
}
