//! The quote totals as of one refresh, kept in the mint's KV store so a
//! restarted mint reads only what changed since, not every quote it ever
//! made: where it stood in the list of quotes and in cdk's log of
//! issuances, its tallies, and the quotes still unpaid.
//!
//! ```text
//! "QTC2" | next u64 | paid: quotes u64, ehash u64 | issued: quotes u64, ehash u64
//!        | after i64 | gaps: u32, i64 each
//!        | unpaid: u32, each: id length u8, id
//! ```
//!
//! Big-endian. Read as untrusted: any length that does not fit what is
//! left, a position or gaps that cannot be, or a bad id fails the whole
//! checkpoint, and the totals are read from the start instead. "QTC1"
//! (which held every open quote) is an older mint's: read from the start
//! once, then replaced.

use std::str::FromStr;

use cdk_common::QuoteId;

use super::issuances::IssuanceCursor;
use super::{QuoteTotals, Tally};

const MAGIC: &[u8; 4] = b"QTC2";
const OLDER: &[u8; 4] = b"QTC1";

/// What a checkpoint holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Checkpoint {
    pub next: u64,
    pub paid: Tally,
    pub issued: Tally,
    pub after: i64,
    pub gaps: Vec<i64>,
    pub unpaid: Vec<QuoteId>,
}

/// `totals` with the log of issuances at `cursor`, encoded; `None` if an
/// unpaid quote's id is too long for its length byte (cdk's are 36).
pub(super) fn encode(totals: &QuoteTotals, cursor: &IssuanceCursor) -> Option<Vec<u8>> {
    let gaps = cursor.gaps();
    let mut out = Vec::with_capacity(64 + gaps.len() * 8 + totals.unpaid.len() * 37);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&totals.next.to_be_bytes());
    for tally in [totals.paid, totals.issued] {
        out.extend_from_slice(&tally.quotes.to_be_bytes());
        out.extend_from_slice(&tally.ehash.to_be_bytes());
    }
    out.extend_from_slice(&cursor.after().to_be_bytes());
    out.extend_from_slice(&(gaps.len() as u32).to_be_bytes());
    for gap in gaps {
        out.extend_from_slice(&gap.to_be_bytes());
    }
    out.extend_from_slice(&(totals.unpaid.len() as u32).to_be_bytes());
    for id in &totals.unpaid {
        let id = id.to_string();
        out.push(u8::try_from(id.len()).ok()?);
        out.extend_from_slice(id.as_bytes());
    }
    Some(out)
}

/// Decodes a checkpoint; why not, if it cannot.
pub(super) fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    let mut input = Input(bytes);
    match input.take(MAGIC.len())? {
        magic if magic == MAGIC => {}
        magic if magic == OLDER => return Err("written by an older mint".into()),
        _ => return Err("not a checkpoint of quote totals (version?)".into()),
    }
    let next = input.u64()?;
    let paid = input.tally()?;
    let issued = input.tally()?;
    let after = i64::try_from(input.u64()?).map_err(|_| "the log's position is negative")?;
    let gaps: Vec<i64> = (0..input.count(8)?)
        .map(|_| input.u64().map(|gap| gap as i64))
        .collect::<Result<_, _>>()?;
    // Skipped numbers are distinct, ascending, and before the position.
    let mut previous = 0;
    for &gap in &gaps {
        if gap <= previous || gap > after {
            return Err(format!("gap {gap} out of order or past {after}"));
        }
        previous = gap;
    }
    let unpaid = (0..input.count(1)?)
        .map(|_| input.quote_id())
        .collect::<Result<_, _>>()?;
    if !input.0.is_empty() {
        return Err(format!("{} bytes past the end", input.0.len()));
    }
    Ok(Checkpoint {
        next,
        paid,
        issued,
        after,
        gaps,
        unpaid,
    })
}

/// What is left to decode.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "cut short: {n} bytes wanted, {} left",
                self.0.len()
            ));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let bytes = self.take(8)?;
        Ok(u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
    }

    fn tally(&mut self) -> Result<Tally, String> {
        Ok(Tally {
            quotes: self.u64()?,
            ehash: self.u64()?,
        })
    }

    /// A count of items of at least `size` bytes each, checked against
    /// what is left before anything is allocated for them.
    fn count(&mut self, size: usize) -> Result<usize, String> {
        let bytes = self.take(4)?;
        let n = u32::from_be_bytes(bytes.try_into().expect("4 bytes")) as usize;
        if n.saturating_mul(size) > self.0.len() {
            return Err(format!("{n} items cannot fit in {} bytes", self.0.len()));
        }
        Ok(n)
    }

    fn quote_id(&mut self) -> Result<QuoteId, String> {
        let length = self.take(1)?[0] as usize;
        std::str::from_utf8(self.take(length)?)
            .ok()
            .and_then(|id| QuoteId::from_str(id).ok())
            .ok_or_else(|| "an unpaid quote's id is not a quote id".into())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn totals() -> (QuoteTotals, IssuanceCursor) {
        let mut totals = QuoteTotals {
            next: 42,
            ..Default::default()
        };
        totals.paid = Tally {
            quotes: 9,
            ehash: 721,
        };
        totals.issued = Tally {
            quotes: 7,
            ehash: 690,
        };
        totals.unpaid.insert(QuoteId::new());
        totals.unpaid.insert(QuoteId::new());
        let mut cursor = IssuanceCursor::default();
        cursor.read(&[1, 2, 5], Instant::now());
        (totals, cursor)
    }

    #[test]
    fn a_checkpoint_decodes_to_what_was_encoded() {
        let (totals, cursor) = totals();
        let decoded = decode(&encode(&totals, &cursor).unwrap()).unwrap();
        assert_eq!(decoded.next, 42);
        assert_eq!((decoded.paid, decoded.issued), (totals.paid, totals.issued));
        assert_eq!((decoded.after, decoded.gaps.clone()), (5, vec![3, 4]));
        let unpaid: std::collections::HashSet<QuoteId> = decoded.unpaid.into_iter().collect();
        assert_eq!(unpaid, totals.unpaid);
    }

    #[test]
    fn a_checkpoint_cut_anywhere_or_lengthened_is_refused_without_a_panic() {
        let (totals, cursor) = totals();
        let bytes = encode(&totals, &cursor).unwrap();
        for end in 0..bytes.len() {
            assert!(decode(&bytes[..end]).is_err(), "cut at {end}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).unwrap_err().contains("past the end"));
    }

    #[test]
    fn counts_larger_than_the_bytes_left_bad_positions_or_ids_and_other_versions_are_refused() {
        let (totals, cursor) = totals();
        let bytes = encode(&totals, &cursor).unwrap();
        // The count of gaps follows the magic, next, two tallies and after.
        let gaps_at = 4 + 8 + 4 * 8 + 8;
        let mut huge = bytes.clone();
        huge[gaps_at..gaps_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&huge).unwrap_err().contains("cannot fit"));

        let after_at = gaps_at - 8;
        let mut negative = bytes.clone();
        negative[after_at] = 0x80;
        assert!(decode(&negative).unwrap_err().contains("negative"));
        let mut behind = bytes.clone();
        behind[after_at..gaps_at].copy_from_slice(&3u64.to_be_bytes());
        assert!(decode(&behind).unwrap_err().contains("past 3"));
        let mut unordered = bytes.clone();
        let first_gap = gaps_at + 4;
        unordered[first_gap..first_gap + 8].copy_from_slice(&4u64.to_be_bytes());
        assert!(decode(&unordered).unwrap_err().contains("out of order"));

        let first_id = gaps_at + 4 + 2 * 8 + 4 + 1;
        let mut bad_id = bytes.clone();
        bad_id[first_id] = b'!';
        assert!(decode(&bad_id).unwrap_err().contains("not a quote id"));

        let mut older = bytes.clone();
        older[3] = b'1';
        assert!(decode(&older).unwrap_err().contains("older mint"));
        let mut version = bytes;
        version[3] = b'9';
        assert!(decode(&version).unwrap_err().contains("version"));
    }
}
