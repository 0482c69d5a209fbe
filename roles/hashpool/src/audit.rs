//! `hashpool audit --mint URL`: downloads a mint's public issuance audit
//! and verifies every entry offline (`ehash::audit`): proof of work, merkle
//! root, pool payment, key commitment and amount; no share twice; and the
//! totals equal the mint's own.

use std::future::Future;

use ehash::audit::{AuditPage, AuditSummary, AuditTotals, MAX_PAGE};
use ehash::UnitBits;
use stratum_core::bitcoin::ScriptBuf;

/// Where the audit is read from.
pub trait AuditSource {
    fn summary(&self) -> impl Future<Output = Result<AuditSummary, String>> + Send;
    fn page(
        &self,
        start: u64,
        limit: u32,
    ) -> impl Future<Output = Result<AuditPage, String>> + Send;
}

/// A mint's audit over HTTP.
pub struct MintAudit {
    base: String,
}

impl MintAudit {
    /// `url`: the mint's Cashu API base URL.
    pub fn new(url: &str) -> Self {
        Self {
            base: url.trim_end_matches('/').to_string(),
        }
    }
}

impl AuditSource for MintAudit {
    async fn summary(&self) -> Result<AuditSummary, String> {
        let url = format!("{}/v1/ehash/audit", self.base);
        cdk_http_client::fetch(&url)
            .await
            .map_err(|e| format!("GET {url}: {e}"))
    }

    async fn page(&self, start: u64, limit: u32) -> Result<AuditPage, String> {
        let url = format!(
            "{}/v1/ehash/audit/entries?start={start}&limit={limit}",
            self.base
        );
        cdk_http_client::fetch(&url)
            .await
            .map_err(|e| format!("GET {url}: {e}"))
    }
}

/// What a passed audit found.
#[derive(Debug)]
pub struct AuditReport {
    pub summary: AuditSummary,
    pub totals: AuditTotals,
}

/// Why an audit failed; `entry` names the first bad entry.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", entry.map(|e| format!("entry {e}: ")).unwrap_or_default())]
pub struct AuditFailure {
    pub entry: Option<u64>,
    pub reason: String,
}

fn failure(entry: Option<u64>, reason: impl Into<String>) -> AuditFailure {
    AuditFailure {
        entry,
        reason: reason.into(),
    }
}

/// Verifies every entry the summary counts; `progress(done, of)` after each page.
pub async fn audit(
    source: &impl AuditSource,
    mut progress: impl FnMut(u64, u64),
) -> Result<AuditReport, AuditFailure> {
    let summary = source.summary().await.map_err(|e| failure(None, e))?;
    let unit_bits =
        UnitBits::new(summary.unit_bits).map_err(|e| failure(None, format!("unit_bits: {e}")))?;
    let scripts = summary
        .reward_scripts
        .iter()
        .map(|s| hex::decode(s).map(ScriptBuf::from_bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failure(None, format!("reward_scripts: {e}")))?;
    let mut totals = AuditTotals::default();
    let mut next = 0;
    while next < summary.entries {
        let limit = (summary.entries - next).min(MAX_PAGE.into()) as u32;
        let page = source
            .page(next, limit)
            .await
            .map_err(|e| failure(Some(next), e))?;
        if page.start != next || page.entries.is_empty() {
            return Err(failure(
                Some(next),
                format!(
                    "asked for entries from {next}, got {} from {}",
                    page.entries.len(),
                    page.start
                ),
            ));
        }
        for entry in &page.entries {
            let verified = entry
                .verify(&scripts, unit_bits)
                .map_err(|e| failure(Some(next), e))?;
            totals.add(&verified).map_err(|e| failure(Some(next), e))?;
            next += 1;
        }
        progress(next, summary.entries);
    }
    if (totals.quotes, totals.ehash) != (summary.quotes, summary.ehash_quoted) {
        return Err(failure(
            None,
            format!(
                "the entries add up to {} quotes and {} ehash, the mint counts {} quotes and {} ehash",
                totals.quotes, totals.ehash, summary.quotes, summary.ehash_quoted
            ),
        ));
    }
    Ok(AuditReport { summary, totals })
}

/// A progress bar line: `[#####-----] 500/1000 entries verified`.
pub fn progress_line(done: u64, of: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(of).unwrap_or(WIDTH) as usize;
    format!(
        "[{}{}] {done}/{of} entries verified",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled)
    )
}

/// The report of a passed audit, for the terminal.
pub fn describe(report: &AuditReport) -> String {
    let mut out = format!(
        "audit passed: {} entries, each real work on a coinbase paying an allowed pool and committing to its key, no share twice\n\
         issued: {} quotes, {} ehash (unit_bits {}): equal to the mint's own totals\n",
        report.summary.entries,
        report.totals.quotes,
        report.totals.ehash,
        report.summary.unit_bits,
    );
    for (key, (quotes, ehash)) in &report.totals.per_key {
        out.push_str(&format!("  {key}: {quotes} quotes, {ehash} ehash\n"));
    }
    out
}
