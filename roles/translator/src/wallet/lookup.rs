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

/// Most characters of a refusal body quoted in an error.
const MAX_REFUSAL_TEXT: usize = 300;
/// Pages of a look-up with nothing missing between saves of where it stands.
const SAVE_EVERY_PAGES: usize = 50;

/// What a look-up of the key's quotes at the mint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookedUp {
    /// Quotes found that the store did not know, now recorded.
    pub found: usize,
    /// Whether it listed to the end; if not, the next look-up goes on
    /// from where it stopped.
    pub finished: bool,
}

impl EhashWallet {
    /// Records the quotes the mint holds for this wallet's key, paid and
    /// not issued, created before `created_before` (unix seconds), that
    /// `store` does not know (their notification never arrived). Listed
    /// from where the store's last look-up at this mint left off, a page at
    /// a time, at most `max_pages`: missing quotes are recorded together
    /// with where the next look-up starts, so it sees every quote this one
    /// left out, after a restart too.
    pub async fn record_from_mint(
        &self,
        store: &QuoteStore,
        created_before: u64,
        max_pages: usize,
    ) -> Result<LookedUp, WalletError> {
        let mint = self.wallet.mint_url.to_string();
        let key = self.key.to_string();
        let from = store.lookup_cursor(&mint, &key)?;
        let (mut found, mut unsaved) = (0, 0);
        let mut resume = from;
        let listing = self.list_at_mint(from, created_before, max_pages, |page, next| {
            let paid: Vec<&QuoteEntry> = page
                .iter()
                .filter(|q| q.state == LookupState::Paid)
                .collect();
            let ids: Vec<&str> = paid.iter().map(|q| q.quote.as_str()).collect();
            let known = store.known(&ids)?;
            let missing: Vec<QuoteRecord> = paid
                .into_iter()
                .filter(|q| !known.contains(&q.quote))
                .map(|q| QuoteRecord {
                    quote_id: q.quote.clone(),
                    share_hash: String::new(),
                    amount: q.amount,
                    locking_key: key.clone(),
                    keyset_id: String::new(),
                    channel_id: 0,
                    sequence_number: 0,
                    state: QuoteState::Pending,
                    created_at: q.created_time,
                    last_error: Some("found at the mint, not notified".into()),
                })
                .collect();
            resume = next;
            unsaved += 1;
            // A disk sync per page would cost a busy proxy thousands per
            // look-up: where it stands is saved with what it finds, and
            // every few pages (a page read again finds nothing new).
            if !missing.is_empty() || unsaved == SAVE_EVERY_PAGES {
                store.record_looked_up(&mint, &key, &missing, next)?;
                found += missing.len();
                unsaved = 0;
            }
            Ok(())
        });
        let finished = listing.await?;
        if unsaved > 0 {
            store.record_looked_up(&mint, &key, &[], resume)?;
        }
        if found > 0 {
            warn!(
                quotes = found,
                key, "the mint holds quotes of this key that were never recorded: recorded them"
            );
        }
        Ok(LookedUp { found, finished })
    }

    /// Every quote the mint holds locked to this wallet's key, in creation
    /// order, listed with the signed lookup by locking key (`ehash::lookup`):
    /// no pool or proxy has to be trusted for the list. The requests are
    /// signed for the mint's NUT-06 `pubkey`; a mint that advertises none
    /// cannot serve them.
    pub async fn quotes_at_mint(&self) -> Result<Vec<QuoteEntry>, WalletError> {
        let mut quotes = Vec::new();
        self.list_at_mint(None, u64::MAX, usize::MAX, |page, _| {
            quotes.extend(page);
            Ok(())
        })
        .await?;
        Ok(quotes)
    }

    /// Hands `page_done` the key's quotes from `from` on, a page at a time,
    /// up to the first created at or after `created_before`: the list is in
    /// creation order, so the rest are younger (and a list that grows
    /// faster than it is read still ends). With each page comes where a
    /// look-up would resume after it: the next page, or at the end the
    /// start of the page that held that first younger quote, or of the
    /// last page. Whether it reached the end, not `max_pages` first.
    async fn list_at_mint(
        &self,
        from: Option<Cursor>,
        created_before: u64,
        max_pages: usize,
        mut page_done: impl FnMut(Vec<QuoteEntry>, Option<Cursor>) -> Result<(), WalletError>,
    ) -> Result<bool, WalletError> {
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
        let mut cursor = from;
        for _ in 0..max_pages {
            let mut page = self
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
                page.quotes.truncate(young);
                return page_done(page.quotes, cursor).map(|()| true);
            }
            let Some(next) = page.next_cursor else {
                return page_done(page.quotes, cursor).map(|()| true);
            };
            let next: Cursor = next
                .parse()
                .map_err(|e| WalletError::Other(format!("the mint's next cursor: {e}")))?;
            // Each page must move forward, so a faulty mint cannot loop us.
            if page.quotes.is_empty() || cursor.is_some_and(|c| next <= c) {
                return Err(WalletError::Other(
                    "the mint's quote lookup does not advance".into(),
                ));
            }
            page_done(page.quotes, Some(next))?;
            cursor = Some(next);
        }
        Ok(false)
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
        let response = tokio::time::timeout(self.timeout, http.post(url).json(&request).send())
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
