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
    /// The page `start..start + limit`, as a failure names it.
    fn page_name(&self, start: u64, limit: u32) -> String {
        format!("the page of {limit} entries from {start}")
    }
}

/// Most bytes one answer of a mint may take: a full page at 32 KiB an entry,
/// far above the ~1 KB one takes, so a hostile mint cannot make the audit
/// read without end.
const MAX_ANSWER_BYTES: usize = MAX_PAGE as usize * 32 * 1024;

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

    fn page_url(&self, start: u64, limit: u32) -> String {
        format!(
            "{}/v1/ehash/audit/entries?start={start}&limit={limit}",
            self.base
        )
    }
}

impl AuditSource for MintAudit {
    async fn summary(&self) -> Result<AuditSummary, String> {
        get_json(&format!("{}/v1/ehash/audit", self.base), MAX_ANSWER_BYTES).await
    }

    async fn page(&self, start: u64, limit: u32) -> Result<AuditPage, String> {
        get_json(&self.page_url(start, limit), MAX_ANSWER_BYTES).await
    }

    fn page_name(&self, start: u64, limit: u32) -> String {
        self.page_url(start, limit)
    }
}

/// GETs `url` and parses its JSON, reading at most `max_bytes` of body.
async fn get_json<T: serde::de::DeserializeOwned>(
    url: &str,
    max_bytes: usize,
) -> Result<T, String> {
    let response = bitreq::get(url)
        .with_max_body_size(max_bytes)
        .send_async()
        .await
        .map_err(|e| match e {
            bitreq::Error::BodyOverflow => {
                format!("GET {url}: the answer is over {max_bytes} bytes")
            }
            e => format!("GET {url}: {e}"),
        })?;
    if !(200..300).contains(&response.status_code) {
        // The mint's own words, cut short: a hostile one could send pages.
        let body = String::from_utf8_lossy(response.as_bytes());
        let body: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
        let body: String = body.chars().take(200).collect();
        return Err(format!("GET {url}: HTTP {}: {body}", response.status_code));
    }
    response.json().map_err(|e| format!("GET {url}: {e}"))
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
        let got = page.entries.len() as u64;
        if page.start != next || got == 0 || got > u64::from(limit) {
            return Err(failure(
                Some(next),
                format!(
                    "{}: asked for 1 to {limit} entries from {next}, got {got} from {}",
                    source.page_name(next, limit),
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
    const WIDTH: usize = 30;
    // In u128 and clamped to `of`: no count, however wrong, breaks the bar.
    let filled = (u128::from(done.min(of)) * WIDTH as u128)
        .checked_div(of.into())
        .map_or(WIDTH, |f| f as usize);
    format!(
        "[{}{}] {done}/{of} entries verified",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled)
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

#[cfg(test)]
mod tests {
    use ehash::audit::AuditEntry;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A mint whose summary counts `entries` and whose every page holds `page` entries.
    struct Fake {
        entries: u64,
        page: usize,
    }

    impl AuditSource for Fake {
        async fn summary(&self) -> Result<AuditSummary, String> {
            Ok(AuditSummary {
                unit_bits: 10,
                reward_scripts: vec![],
                entries: self.entries,
                quotes: self.entries,
                ehash_quoted: 0,
            })
        }

        async fn page(&self, start: u64, _limit: u32) -> Result<AuditPage, String> {
            let entry = AuditEntry {
                header: String::new(),
                coinbase: String::new(),
                merkle_path: vec![],
                target: String::new(),
                amount: 0,
                locking_key: String::new(),
                issued_at: 0,
            };
            Ok(AuditPage {
                start,
                entries: vec![entry; self.page],
            })
        }
    }

    #[tokio::test]
    async fn a_page_with_more_entries_than_asked_for_fails_the_audit() {
        let mut pages = vec![];
        let failed = audit(
            &Fake {
                entries: 1,
                page: 2,
            },
            |done, of| pages.push((done, of)),
        )
        .await
        .unwrap_err();
        assert_eq!(failed.entry, Some(0));
        assert_eq!(
            failed.reason,
            "the page of 1 entries from 0: asked for 1 to 1 entries from 0, got 2 from 0"
        );
        assert!(pages.is_empty(), "no progress past the summary: {pages:?}");
    }

    #[test]
    fn the_page_named_in_a_failure_is_the_url_it_was_read_from() {
        assert_eq!(
            MintAudit::new("http://127.0.0.1:3338/").page_name(1000, 500),
            "http://127.0.0.1:3338/v1/ehash/audit/entries?start=1000&limit=500"
        );
    }

    #[test]
    fn the_progress_bar_is_full_at_most() {
        let full = format!("[{}]", "#".repeat(30));
        assert_eq!(progress_line(5, 3), format!("{full} 5/3 entries verified"));
        assert!(progress_line(u64::MAX, u64::MAX).starts_with(&full));
        assert!(progress_line(0, 0).starts_with(&full));
        assert_eq!(
            progress_line(1, 2),
            format!(
                "[{}{}] 1/2 entries verified",
                "#".repeat(15),
                "-".repeat(15)
            )
        );
    }

    /// Serves one HTTP answer of `body_len` bytes on 127.0.0.1: its URL.
    async fn serve_once(body_len: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&vec![b' '; body_len]).await;
        });
        format!("http://{addr}/v1/ehash/audit")
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_refused() {
        let url = serve_once(2000).await;
        let err = get_json::<AuditSummary>(&url, 1000).await.unwrap_err();
        assert_eq!(err, format!("GET {url}: the answer is over 1000 bytes"));
        // Under the cap the same answer is read (and is no JSON).
        let url = serve_once(500).await;
        let err = get_json::<AuditSummary>(&url, 1000).await.unwrap_err();
        assert!(!err.contains("over 1000 bytes"), "{err}");
    }
}
