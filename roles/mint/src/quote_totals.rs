//! The totals of the ehash quotes (`MintStatsResponse`) without reading
//! every quote each time: cdk's database only lists all quotes, which grows
//! with every share the mint ever quoted.
//!
//! Every ehash quote's id is appended to a [`KvLog`] (`quote_ids`) in the
//! transaction that creates it, so the list is the same for every mint
//! process sharing the database. [`QuoteTotals`] follows that list from
//! where it stopped, and reads again only the quotes not issued yet: a
//! refresh costs the new quotes and the unminted ones, whatever the
//! database's size. `quote_ids` / `backfilled` is present once quotes
//! created before this list existed have been added.

use std::collections::HashMap;

use cdk::mint::Mint;
use cdk_common::database::mint::{DynMintDatabase, DynMintTransaction};
use cdk_common::database::Error;
use cdk_common::mint::MintQuote;
use cdk_common::{MintQuoteState, QuoteId};

use crate::kv_log::KvLog;
use crate::service::{ehash_quotes_oldest_first, KV_NAMESPACE};

const IDS: KvLog<'static> = KvLog {
    list: "quote_ids",
    hints: "quote_ids_next",
    hint_key: "next",
};
const META: &str = "quote_ids";
const BACKFILLED: &str = "backfilled";

/// Quotes read from the database at once.
const PAGE: usize = 1000;

/// Adds quote ids, in creation order, to the list of ehash quotes, inside
/// the transaction that creates the quotes.
pub async fn append(tx: &mut DynMintTransaction, quote_ids: &[QuoteId]) -> Result<(), Error> {
    let entries: Vec<String> = quote_ids.iter().map(QuoteId::to_string).collect();
    IDS.append(tx, &entries).await
}

/// Lists, once, the ehash quotes created before the list existed, in
/// creation order. Runs before the mint serves, so nothing else appends.
pub async fn backfill(mint: &Mint) -> Result<usize, Error> {
    let db = mint.localstore();
    if db.kv_read(KV_NAMESPACE, META, BACKFILLED).await?.is_some() {
        return Ok(0);
    }
    let quotes = ehash_quotes_oldest_first(mint).await?;
    let ids: Vec<QuoteId> = quotes.into_iter().map(|quote| quote.id).collect();
    let mut tx = db.begin_transaction().await?;
    append(&mut tx, &ids).await?;
    tx.kv_write(KV_NAMESPACE, META, BACKFILLED, &[1]).await?;
    tx.commit().await?;
    Ok(ids.len())
}

/// What the totals count, as of the last refresh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub quotes_unpaid: u64,
    pub quotes_paid: u64,
    pub quotes_issued: u64,
    pub ehash_quoted: u64,
    pub ehash_issued: u64,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    state: MintQuoteState,
    quoted: u64,
    issued: u64,
}

/// The totals, kept up to date by [`QuoteTotals::refresh`].
#[derive(Debug, Default)]
pub struct QuoteTotals {
    /// The list's next position to read.
    next: u64,
    /// Quotes not issued yet, as last read.
    open: HashMap<QuoteId, Open>,
    /// Issued quotes: done with, counted once.
    issued: Totals,
}

impl QuoteTotals {
    /// Reads the quotes still open, then those added since the last
    /// refresh, a page at a time: memory holds the open quotes and one page.
    pub async fn refresh(&mut self, db: &DynMintDatabase) -> Result<Totals, Error> {
        let open: Vec<QuoteId> = self.open.keys().cloned().collect();
        for page in open.chunks(PAGE) {
            self.read_quotes(db, page).await?;
        }
        loop {
            let page = IDS.read(db, self.next, PAGE).await?;
            if page.is_empty() {
                break;
            }
            let ids = page
                .into_iter()
                .map(|entry| {
                    String::from_utf8(entry)
                        .ok()
                        .and_then(|s| s.parse::<QuoteId>().ok())
                        .ok_or_else(|| Error::Internal("quote_ids: an entry is no quote id".into()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.read_quotes(db, &ids).await?;
            self.next += ids.len() as u64;
        }
        Ok(self.totals())
    }

    async fn read_quotes(&mut self, db: &DynMintDatabase, ids: &[QuoteId]) -> Result<(), Error> {
        let quotes = db.get_mint_quotes_by_ids(ids).await?;
        for (id, quote) in ids.iter().zip(quotes) {
            match quote {
                Some(quote) => self.update(id, &quote),
                // Listed in the transaction that created it: not there only
                // if it was deleted, which the mint never does.
                None => tracing::warn!("quote {id} is listed but not in the database"),
            }
        }
        Ok(())
    }

    /// Quotes read again at each refresh: those not issued yet.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.open.len()
    }

    fn update(&mut self, id: &QuoteId, quote: &MintQuote) {
        let quoted = quote.amount_paid().value();
        if quote.state() == MintQuoteState::Issued {
            self.open.remove(id);
            self.issued.quotes_issued += 1;
            self.issued.ehash_quoted = self.issued.ehash_quoted.saturating_add(quoted);
            self.issued.ehash_issued = self
                .issued
                .ehash_issued
                .saturating_add(quote.amount_issued().value());
        } else {
            let open = Open {
                state: quote.state(),
                quoted,
                issued: quote.amount_issued().value(),
            };
            self.open.insert(id.clone(), open);
        }
    }

    fn totals(&self) -> Totals {
        let mut totals = self.issued;
        for open in self.open.values() {
            totals.ehash_quoted = totals.ehash_quoted.saturating_add(open.quoted);
            totals.ehash_issued = totals.ehash_issued.saturating_add(open.issued);
            match open.state {
                MintQuoteState::Unpaid => totals.quotes_unpaid += 1,
                _ => totals.quotes_paid += 1,
            }
        }
        totals
    }
}
