//! `translator --config config/translator.toml` runs the proxy;
//! `translator --config ... wallet balance|send <amount>|quotes` uses its wallet.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use translator::cli::WalletCommand;
use translator::TranslatorConfig;

const ENV_PREFIX: &str = "TRANSLATOR";

#[derive(Parser, Debug)]
#[command(
    name = "translator",
    about = "Hashpool translator: SV1 miners in, SV2 out, ehash wallet"
)]
struct Cli {
    /// Path of the translator's TOML config file.
    #[arg(short, long)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The translator's ehash wallet.
    Wallet {
        #[command(subcommand)]
        command: WalletCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, runtime) = match roles_common::config_and_runtime::<TranslatorConfig>(
        "translator",
        &cli.config,
        ENV_PREFIX,
    ) {
        Ok(both) => both,
        Err(code) => return code,
    };
    match cli.command {
        None => {
            roles_common::init_logging();
            if let Some(warning) = roles_common::private::exposed_secret_warning(&cli.config) {
                tracing::warn!("{warning}");
            }
            roles_common::run_until_signal(&runtime, "translator", "translator", |shutdown| {
                translator::run(config, shutdown)
            })
        }
        Some(Command::Wallet { command }) => {
            match runtime.block_on(wallet_command(config, command)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("translator wallet: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn wallet_command(config: TranslatorConfig, command: WalletCommand) -> Result<(), String> {
    let out = translator::cli::run_wallet_command(&config, command).await?;
    print!("{out}");
    Ok(())
}
