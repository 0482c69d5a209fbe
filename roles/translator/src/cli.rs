//! `translator wallet key|claim|restore|balance|send <amount>|receive <token>|quotes`:
//! the wallet commands, as functions returning what the command prints
//! (tested without a process). They serve the translator's wallet and a
//! miner's own wallet directory alike ([`crate::wallet::OwnWallet`]).

use crate::quotes::{QuoteState, QuoteStore};
use crate::wallet::{EhashWallet, CONSOLIDATE_ABOVE};
use crate::TranslatorConfig;

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum WalletCommand {
    /// Prints the wallet's locking key and the SV1 username that locks a
    /// miner's ehash to it.
    Key {
        /// A worker name to append to the username.
        #[arg(long)]
        worker: Option<String>,
    },
    /// Deletes the records of quotes done with that were created long ago;
    /// finds every quote locked to the wallet's key at the mint (signed
    /// lookup) and mints it, in NUT-29 batches, exactly once; then swaps
    /// the wallet's proofs into the fewest if it holds many. Refused while
    /// a translator mints from the same data dir.
    Claim {
        /// Hours the record of a quote done with (minted, or a miner's own)
        /// and of a refused share is kept after the quote's creation
        /// (default: the translator's `keep_quotes_hours`; 24 for a miner's
        /// own wallet).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        keep_quotes_hours: Option<u64>,
    },
    /// Finds the wallet's unspent ecash at the mint from its mnemonic
    /// alone, for a wallet.sqlite lost or restored from a backup: every
    /// keyset is scanned from its first output, 100 at a time, until --gap
    /// batches in a row hold nothing the mint signed. Refused while a
    /// translator mints from the same data dir.
    Restore {
        /// Batches of 100 outputs in a row with nothing signed that end the
        /// scan of a keyset. Batches the mint refused leave such runs: raise
        /// it if a restore finds less than expected.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        gap: u32,
    },
    /// Prints the balance (ehash) and the quote totals.
    Balance,
    /// Prints a cashuB token worth <amount> ehash.
    Send { amount: u64 },
    /// Receives a cashuB token into the wallet.
    Receive { token: String },
    /// Lists every quote record: minted, pending, and those locked to miners'
    /// own keys (for their wallets to mint), plus shares that got no quote.
    Quotes,
}

/// Opens the wallet and quote records of `config` and runs `command`.
pub async fn run_wallet_command(
    config: &TranslatorConfig,
    command: WalletCommand,
) -> Result<String, String> {
    let (store, wallet) = crate::open_wallet(config)
        .await
        .map_err(|e| e.to_string())?;
    let command = command.with_translator_defaults(config.keep_quotes_hours);
    run_wallet_command_on(&wallet, &store, command).await
}

impl WalletCommand {
    /// The command on the translator's own wallet: what it leaves unsaid
    /// comes from the translator's config (its `keep_quotes_hours`).
    fn with_translator_defaults(self, keep_quotes_hours: u64) -> WalletCommand {
        match self {
            WalletCommand::Claim {
                keep_quotes_hours: None,
            } => WalletCommand::Claim {
                keep_quotes_hours: Some(keep_quotes_hours),
            },
            command => command,
        }
    }
}

/// Quotes minted in one NUT-29 batch by `claim`.
const CLAIM_BATCH: usize = 1000;
/// `quotes` lists the newest this many quotes and failures: a busy proxy
/// keeps millions.
const LISTED_AT_MOST: usize = 1000;

/// Records the key's quotes the mint holds, then mints every pending one,
/// with a progress line per batch on stderr. Finishing what an interrupted
/// claim started comes first, so a quote is never minted twice (the caller
/// holds the store's minter lock). How many quotes were found, and
/// (quotes, amount) minted.
async fn claim(wallet: &EhashWallet, store: &QuoteStore) -> Result<(usize, (usize, u64)), String> {
    wallet.recover().await.map_err(|e| e.to_string())?;
    let found = wallet
        .record_from_mint(store, u64::MAX, usize::MAX)
        .await
        .map_err(|e| e.to_string())?
        .found;
    let total = store.totals().map_err(|e| e.to_string())?.pending.0;
    let (mut quotes, mut amount) = (0usize, 0u64);
    loop {
        let round = wallet
            .mint_pending(store, CLAIM_BATCH)
            .await
            .map_err(|e| e.to_string())?;
        let done = round.minted.len() + round.already_issued.len();
        quotes += done;
        amount += round.amount;
        if total > 0 {
            eprintln!(
                "claiming: {quotes} of {total} quotes minted ({amount} {})",
                ehash::constants::UNIT
            );
        }
        if done == 0 {
            break;
        }
    }
    Ok((found, (quotes, amount)))
}

pub async fn run_wallet_command_on(
    wallet: &EhashWallet,
    store: &QuoteStore,
    command: WalletCommand,
) -> Result<String, String> {
    let unit = ehash::constants::UNIT;
    let mut out = String::new();
    match command {
        WalletCommand::Key { worker } => {
            let key = wallet.locking_key();
            out += &format!("locking key: {key}\n");
            let username = match worker {
                Some(w) => format!("{key}.{w}"),
                None => key.to_string(),
            };
            out += &format!("SV1 username: {username}\n");
        }
        WalletCommand::Claim { keep_quotes_hours } => {
            out += &claim_command(wallet, store, keep_quotes_hours).await?;
        }
        WalletCommand::Restore { gap } => {
            // Counters and proofs change under a minting translator's feet.
            let _minter = store.take_minter().map_err(|e| e.to_string())?;
            eprintln!(
                "restoring: asking the mint about the wallet's outputs, {} at a time",
                crate::wallet::RESTORE_BATCH
            );
            let r = wallet.restore(gap).await.map_err(|e| e.to_string())?;
            out += &format!(
                "restored: {} {unit} spendable, {} {unit} pending; {} {unit} held already, \
                 {} {unit} found spent\n",
                r.added, r.pending, r.held, r.spent
            );
            let balance = wallet.balance().await.map_err(|e| e.to_string())?;
            out += &format!("balance: {balance} {unit}\n");
        }
        WalletCommand::Receive { token } => {
            let amount = wallet.receive(&token).await.map_err(|e| e.to_string())?;
            out += &format!("received: {amount} {unit}\n");
        }
        WalletCommand::Balance => out += &balance_listing(wallet, store).await?,
        WalletCommand::Send { amount } => {
            let token = wallet.send(amount).await.map_err(|e| e.to_string())?;
            out += &token;
            out.push('\n');
        }
        WalletCommand::Quotes => {
            out += &quote_listing(&wallet.locking_key().to_string(), store)?;
        }
    }
    Ok(out)
}

/// `wallet claim`: deletes old records, mints what the mint holds for the
/// wallet's key, consolidates; what it did.
async fn claim_command(
    wallet: &EhashWallet,
    store: &QuoteStore,
    keep_quotes_hours: Option<u64>,
) -> Result<String, String> {
    let unit = ehash::constants::UNIT;
    let mut out = String::new();
    // Refused, with nothing done, while a translator mints from the store.
    let _minter = store.take_minter().map_err(|e| e.to_string())?;
    // Before minting: what this claim mints keeps its record until the next.
    let hours = keep_quotes_hours.unwrap_or(crate::config::DEFAULT_KEEP_QUOTES_HOURS);
    let before = roles_common::unix_secs().saturating_sub(hours.saturating_mul(3600));
    match store.prune_all(before, || false) {
        Ok((0, 0)) => {}
        Ok((quotes, failures)) => {
            out += &format!(
                "deleted the records of {quotes} quotes done with and {failures} refused \
                 shares, created over {hours} h ago\n"
            )
        }
        Err(e) => out += &format!("old records not deleted: {e}\n"),
    }
    let (found, minted) = claim(wallet, store).await?;
    out += &format!("quotes found at the mint and not known here: {found}\n");
    out += &format!("minted now: {} quotes, {} {unit}\n", minted.0, minted.1);
    let held = wallet
        .consolidate(CONSOLIDATE_ABOVE)
        .await
        .map_err(|e| e.to_string())?;
    out += &format!(
        "balance: {} {unit} in {} proofs\n",
        held.balance, held.proofs
    );
    Ok(out)
}

/// `wallet balance`: the wallet's balance and the store's quote totals.
async fn balance_listing(wallet: &EhashWallet, store: &QuoteStore) -> Result<String, String> {
    let unit = ehash::constants::UNIT;
    let balance = wallet.balance().await.map_err(|e| e.to_string())?;
    let t = store.totals().map_err(|e| e.to_string())?;
    let mut out = format!("balance: {balance} {unit}\n");
    out += &format!("wallet locking key: {}\n", wallet.locking_key());
    out += &format!("quotes minted: {} ({} {unit})\n", t.minted.0, t.minted.1);
    out += &format!("quotes pending: {} ({} {unit})\n", t.pending.0, t.pending.1);
    out += &format!(
        "quotes locked to miners' own keys: {} ({} {unit})\n",
        t.foreign.0, t.foreign.1
    );
    out += &format!("shares without a quote: {}\n", t.failures);
    Ok(out)
}

/// The newest records of quotes and failures, tab-separated, `own` naming
/// the wallet's key.
fn quote_listing(own: &str, store: &QuoteStore) -> Result<String, String> {
    let mut out = String::new();
    out += "quote_id\tamount\tstate\tlocking_key\tshare_hash\tlast_error\n";
    let quotes = store.newest(LISTED_AT_MOST).map_err(|e| e.to_string())?;
    let failures = store
        .newest_failures(LISTED_AT_MOST)
        .map_err(|e| e.to_string())?;
    let t = store.totals().map_err(|e| e.to_string())?;
    let older = (t.pending.0 + t.minted.0 + t.foreign.0).saturating_sub(quotes.len() as u64);
    let older_failures = t.failures.saturating_sub(failures.len() as u64);
    for r in quotes {
        let state = match r.state {
            QuoteState::Foreign => "miner-key",
            s => s.as_str(),
        };
        let key = if r.locking_key == own {
            "wallet"
        } else {
            r.locking_key.as_str()
        };
        out += &format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            r.quote_id,
            r.amount,
            state,
            key,
            r.share_hash,
            r.last_error.as_deref().unwrap_or("")
        );
    }
    for f in failures {
        out += &format!(
            "-\t0\tfailed:{}\t-\t{}\t{}\n",
            f.error_code, f.share_hash, f.error_message
        );
    }
    if older + older_failures > 0 {
        out += &format!(
            "# not listed: {older} older quotes and {older_failures} older failures \
             (the newest {LISTED_AT_MOST} of each are)\n"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: WalletCommand,
    }

    fn parsed(args: &[&str]) -> Result<WalletCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("wallet").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn claim_keeps_quote_records_as_long_as_said_else_as_the_translator_does() {
        let claim = |hours| WalletCommand::Claim {
            keep_quotes_hours: Some(hours),
        };
        let on_translator = |args: &[&str]| parsed(args).unwrap().with_translator_defaults(48);
        assert_eq!(on_translator(&["claim"]), claim(48));
        assert_eq!(
            on_translator(&["claim", "--keep-quotes-hours", "5"]),
            claim(5)
        );
        assert_eq!(on_translator(&["balance"]), WalletCommand::Balance);
        assert!(parsed(&["claim", "--keep-quotes-hours", "0"]).is_err());
        assert_eq!(
            parsed(&["restore"]).unwrap(),
            WalletCommand::Restore { gap: 10 }
        );
        assert!(parsed(&["restore", "--gap", "0"]).is_err());
    }
}
