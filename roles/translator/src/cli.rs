//! `translator wallet balance|send <amount>|quotes`: the wallet commands,
//! as functions returning what the command prints (tested without a process).

use crate::quotes::{QuoteState, QuoteStore};
use crate::wallet::EhashWallet;
use crate::TranslatorConfig;

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum WalletCommand {
    /// Prints the balance (ehash) and the quote totals.
    Balance,
    /// Prints a cashuB token worth <amount> ehash.
    Send { amount: u64 },
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
    run_wallet_command_on(&wallet, &store, command).await
}

pub async fn run_wallet_command_on(
    wallet: &EhashWallet,
    store: &QuoteStore,
    command: WalletCommand,
) -> Result<String, String> {
    let unit = ehash::constants::UNIT;
    let mut out = String::new();
    match command {
        WalletCommand::Balance => {
            let balance = wallet.balance().await.map_err(|e| e.to_string())?;
            let t = store.totals().map_err(|e| e.to_string())?;
            out += &format!("balance: {balance} {unit}\n");
            out += &format!("wallet locking key: {}\n", wallet.locking_key());
            out += &format!("quotes minted: {} ({} {unit})\n", t.minted.0, t.minted.1);
            out += &format!("quotes pending: {} ({} {unit})\n", t.pending.0, t.pending.1);
            out += &format!(
                "quotes locked to miners' own keys: {} ({} {unit})\n",
                t.foreign.0, t.foreign.1
            );
            out += &format!("shares without a quote: {}\n", t.failures);
        }
        WalletCommand::Send { amount } => {
            let token = wallet.send(amount).await.map_err(|e| e.to_string())?;
            out += &token;
            out.push('\n');
        }
        WalletCommand::Quotes => {
            let own = wallet.locking_key().to_string();
            out += "quote_id\tamount\tstate\tlocking_key\tshare_hash\tlast_error\n";
            for r in store.all().map_err(|e| e.to_string())? {
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
            for f in store.failures().map_err(|e| e.to_string())? {
                out += &format!(
                    "-\t0\tfailed:{}\t-\t{}\t{}\n",
                    f.error_code, f.share_hash, f.error_message
                );
            }
        }
    }
    Ok(out)
}
