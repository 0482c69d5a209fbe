//! The live status line of `hashpool devnet`, computed from counters the
//! roles expose (no IO here, so it is tested directly).

use std::time::Duration;

/// Counters read from the running roles at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Since the devnet started.
    pub uptime: Duration,
    /// Hashes the CPU miner computed (this run).
    pub hashes: u64,
    /// Shares the miner got answers for (this run).
    pub accepted: u64,
    pub rejected: u64,
    /// ehash of every quote the translator recorded (all runs).
    pub ehash_quoted: u64,
    /// ehash of the quotes the wallet minted (all runs).
    pub ehash_minted: u64,
    /// Spendable balance of the translator's wallet; None when it could
    /// not be read.
    pub wallet_balance: Option<u64>,
    /// Blocks this run found, and the chain height.
    pub blocks_found: u32,
    pub height: u32,
}

/// Turns snapshots into status lines; remembers the previous one for the
/// hashrate over the last interval.
#[derive(Debug, Default)]
pub struct StatusLine {
    previous: Option<Snapshot>,
}

impl StatusLine {
    pub fn render(&mut self, now: Snapshot) -> String {
        let hashrate = match self.previous {
            Some(prev) if now.uptime > prev.uptime => {
                now.hashes.saturating_sub(prev.hashes) as f64
                    / (now.uptime - prev.uptime).as_secs_f64()
            }
            _ => 0.0,
        };
        self.previous = Some(now);
        let secs = now.uptime.as_secs();
        let wallet = now
            .wallet_balance
            .map_or_else(|| "unreadable".to_string(), |b| b.to_string());
        format!(
            "[{:02}:{:02}:{:02}] {} | shares {} accepted, {} rejected | ehash {} quoted, {} minted | wallet {} | blocks {} found (height {})",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            miner::format_hashrate(hashrate),
            now.accepted,
            now.rejected,
            now.ehash_quoted,
            now.ehash_minted,
            wallet,
            now.blocks_found,
            now.height,
        )
    }
}

/// The wallet balance in a status line (what the devnet test reads).
pub fn parse_wallet_balance(line: &str) -> Option<u64> {
    let rest = line.split("| wallet ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, hashes: u64) -> Snapshot {
        Snapshot {
            uptime: Duration::from_secs(secs),
            hashes,
            accepted: 7,
            rejected: 1,
            ehash_quoted: 900,
            ehash_minted: 800,
            wallet_balance: Some(800),
            blocks_found: 2,
            height: 12,
        }
    }

    #[test]
    fn the_hashrate_is_over_the_last_interval() {
        let mut status = StatusLine::default();
        let first = status.render(at(5, 5_000_000));
        assert!(first.starts_with("[00:00:05] 0.00 H/s |"), "{first}");
        let second = status.render(at(10, 7_500_000));
        assert!(second.starts_with("[00:00:10] 500.00 kH/s |"), "{second}");
        assert!(second.contains("shares 7 accepted, 1 rejected"), "{second}");
        assert!(second.contains("ehash 900 quoted, 800 minted"), "{second}");
        assert!(second.contains("blocks 2 found (height 12)"), "{second}");
    }

    #[test]
    fn the_wallet_balance_reads_back_from_the_line() {
        let mut status = StatusLine::default();
        let line = status.render(at(3723, 0));
        assert!(line.starts_with("[01:02:03]"), "{line}");
        assert_eq!(parse_wallet_balance(&line), Some(800));
        let unreadable = status.render(Snapshot {
            wallet_balance: None,
            ..at(3724, 0)
        });
        assert_eq!(parse_wallet_balance(&unreadable), None);
        assert!(unreadable.contains("wallet unreadable"));
    }
}
