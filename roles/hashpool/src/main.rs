use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hashpool::{devnet, profile};

#[derive(Parser, Debug)]
#[command(
    name = "hashpool",
    about = "Hashpool: a mining pool that pays every share in ecash"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs template provider, mint, pool, translator and a CPU miner on a
    /// private devnet chain, in this process, until Ctrl-C.
    Devnet {
        #[command(flatten)]
        profile: ProfileArgs,
        /// Listen on 127.0.0.1 with ports the system picks (next to another devnet, in tests).
        #[arg(long)]
        ephemeral_ports: bool,
    },
    /// The devnet translator's wallet: balance, send <amount>, quotes.
    Wallet {
        #[command(flatten)]
        profile: ProfileArgs,
        #[command(subcommand)]
        command: translator::cli::WalletCommand,
    },
}

#[derive(clap::Args, Debug)]
struct ProfileArgs {
    /// The devnet profile; role files are read from its directory.
    #[arg(long, default_value = "config/devnet.toml")]
    profile: PathBuf,
    /// Overrides the profile's state_dir.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

impl ProfileArgs {
    fn load(&self) -> Result<profile::DevnetConfigs, String> {
        let mut configs = profile::load(&self.profile)?;
        if let Some(dir) = &self.state_dir {
            configs.move_state_to(dir);
        }
        Ok(configs)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (configs, command) = match &cli.command {
        Command::Devnet { profile, .. } | Command::Wallet { profile, .. } => match profile.load() {
            Ok(c) => (c, &cli.command),
            Err(e) => {
                eprintln!("hashpool: bad config: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hashpool: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Devnet {
            ephemeral_ports, ..
        } => {
            let mut configs = configs;
            if *ephemeral_ports {
                configs.use_ephemeral_ports();
            }
            if let Err(e) = devnet::init_logging(&configs.state_dir) {
                eprintln!("hashpool: {e}");
                return ExitCode::FAILURE;
            }
            let result = runtime.block_on(async move {
                let shutdown = roles_common::shutdown_on_signal();
                devnet::run(configs, shutdown).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("devnet stopped: {e}");
                    eprintln!("hashpool devnet: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Wallet { command, .. } => {
            let result = runtime.block_on(translator::cli::run_wallet_command(
                &configs.translator,
                command.clone(),
            ));
            match result {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hashpool wallet: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
