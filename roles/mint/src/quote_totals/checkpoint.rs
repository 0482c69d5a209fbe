//! The quote totals as of one refresh, kept in the mint's KV store so a
//! restarted mint reads only what changed since, not every quote it ever
//! made: where it stood in the list of quotes and in cdk's log of
//! issuances, the issued totals, and the open quotes.
//!
//! ```text
//! "QTC1" | next u64 | issued: 5 x u64 | after i64
//!        | gaps: u32, i64 each
//!        | open: u32, each: id length u8, id, state u8, quoted u64, issued u64
//! ```
//!
//! Big-endian. Read as untrusted: any length that does not fit what is
//! left, an unknown state or a bad id fails the whole checkpoint, and the
//! totals are read from the start instead.

use std::str::FromStr;

use cdk_common::{MintQuoteState, QuoteId};

use super::issuances::IssuanceCursor;
use super::{Open, QuoteTotals, Totals};

const MAGIC: &[u8; 4] = b"QTC1";

/// Bytes of an open quote besides its id.
const OPEN_FIXED: usize = 1 + 1 + 8 + 8;

/// What a checkpoint holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Checkpoint {
    pub next: u64,
    pub issued: Totals,
    pub after: i64,
    pub gaps: Vec<i64>,
    pub open: Vec<(QuoteId, Open)>,
}

/// `totals` with the log of issuances at `cursor`, encoded; `None` if an
/// open quote's id is too long for its length byte (cdk's are 36).
pub(super) fn encode(totals: &QuoteTotals, cursor: &IssuanceCursor) -> Option<Vec<u8>> {
    let gaps = cursor.gaps();
    let mut out = Vec::with_capacity(64 + gaps.len() * 8 + totals.open.len() * (OPEN_FIXED + 36));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&totals.next.to_be_bytes());
    let issued = totals.issued;
    for n in [
        issued.quotes_unpaid,
        issued.quotes_paid,
        issued.quotes_issued,
        issued.ehash_quoted,
        issued.ehash_issued,
    ] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(&cursor.after().to_be_bytes());
    out.extend_from_slice(&(gaps.len() as u32).to_be_bytes());
    for gap in gaps {
        out.extend_from_slice(&gap.to_be_bytes());
    }
    out.extend_from_slice(&(totals.open.len() as u32).to_be_bytes());
    for (id, open) in &totals.open {
        let id = id.to_string();
        out.push(u8::try_from(id.len()).ok()?);
        out.extend_from_slice(id.as_bytes());
        out.push(match open.state {
            MintQuoteState::Unpaid => 0,
            _ => 1,
        });
        out.extend_from_slice(&open.quoted.to_be_bytes());
        out.extend_from_slice(&open.issued.to_be_bytes());
    }
    Some(out)
}

/// Decodes a checkpoint; why not, if it cannot.
pub(super) fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    let mut input = Input(bytes);
    if input.take(MAGIC.len())? != MAGIC {
        return Err("not a checkpoint of quote totals (version?)".into());
    }
    let next = input.u64()?;
    let issued = Totals {
        quotes_unpaid: input.u64()?,
        quotes_paid: input.u64()?,
        quotes_issued: input.u64()?,
        ehash_quoted: input.u64()?,
        ehash_issued: input.u64()?,
    };
    let after = input.u64()? as i64;
    let gaps = (0..input.count(8)?)
        .map(|_| input.u64().map(|gap| gap as i64))
        .collect::<Result<_, _>>()?;
    let open = (0..input.count(1 + OPEN_FIXED)?)
        .map(|_| input.open())
        .collect::<Result<_, _>>()?;
    if !input.0.is_empty() {
        return Err(format!("{} bytes past the end", input.0.len()));
    }
    Ok(Checkpoint {
        next,
        issued,
        after,
        gaps,
        open,
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

    fn open(&mut self) -> Result<(QuoteId, Open), String> {
        let length = self.take(1)?[0] as usize;
        let id = std::str::from_utf8(self.take(length)?)
            .ok()
            .and_then(|id| QuoteId::from_str(id).ok())
            .ok_or("an open quote's id is not a quote id")?;
        let state = match self.take(1)?[0] {
            0 => MintQuoteState::Unpaid,
            1 => MintQuoteState::Paid,
            other => return Err(format!("open quote {id}: state {other}")),
        };
        let open = Open {
            state,
            quoted: self.u64()?,
            issued: self.u64()?,
        };
        Ok((id, open))
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
        totals.issued.quotes_issued = 7;
        totals.issued.ehash_quoted = 700;
        totals.issued.ehash_issued = 690;
        for (i, state) in [MintQuoteState::Unpaid, MintQuoteState::Paid]
            .into_iter()
            .enumerate()
        {
            let open = Open {
                state,
                quoted: 10 + i as u64,
                issued: i as u64,
            };
            totals.open.insert(QuoteId::new(), open);
        }
        let mut cursor = IssuanceCursor::starting_at(Some(5_000));
        cursor.read(&[4_001, 4_004], Instant::now());
        (totals, cursor)
    }

    #[test]
    fn a_checkpoint_decodes_to_what_was_encoded() {
        let (totals, cursor) = totals();
        let decoded = decode(&encode(&totals, &cursor).unwrap()).unwrap();
        assert_eq!(decoded.next, 42);
        assert_eq!(decoded.issued, totals.issued);
        assert_eq!(
            (decoded.after, decoded.gaps.clone()),
            (4_004, vec![4_002, 4_003])
        );
        let mut open = decoded.open;
        open.sort_by_key(|(id, _)| id.to_string());
        let mut expected: Vec<_> = totals.open.into_iter().collect();
        expected.sort_by_key(|(id, _)| id.to_string());
        assert_eq!(open, expected);
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
    fn counts_larger_than_the_bytes_left_and_unknown_states_are_refused() {
        let (totals, cursor) = totals();
        let bytes = encode(&totals, &cursor).unwrap();
        // The count of gaps follows the magic, next, five totals and after.
        let gaps_at = 4 + 8 + 5 * 8 + 8;
        let mut huge = bytes.clone();
        huge[gaps_at..gaps_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&huge).unwrap_err().contains("cannot fit"));

        let first_state = gaps_at + 4 + 2 * 8 + 4 + 1 + 36;
        let mut unknown = bytes.clone();
        unknown[first_state] = 9;
        assert!(decode(&unknown).unwrap_err().contains("state 9"));

        let mut version = bytes;
        version[3] = b'2';
        assert!(decode(&version).unwrap_err().contains("version"));
    }
}
