use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hashpool::{audit, devnet, profile, state_dir};

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
        /// Mine declared jobs: the translator mines through jd-client, which
        /// declares the template provider's templates at the pool's job
        /// declarator.
        #[arg(long)]
        jd: bool,
        /// Run as a small cluster: two mint instances on one PostgreSQL,
        /// fed by Redis Streams, and two pools. PostgreSQL and Redis are
        /// started here in temporary directories, so every run starts
        /// fresh, with its state in `<state dir>-scale-out`.
        #[arg(long)]
        scale_out: bool,
    },
    /// An ehash wallet: a miner's own (`--dir`), or the devnet translator's.
    ///
    /// With `--dir DIR` the wallet lives in DIR (created with a fresh
    /// mnemonic the first time) and talks to the mint at `--mint`: `key`
    /// prints the SV1 username to mine with, `claim` mints every quote
    /// locked to that key. Without `--dir`, the devnet translator's wallet.
    Wallet {
        #[command(flatten)]
        profile: ProfileArgs,
        /// A miner's own wallet directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The mint's URL (with --dir).
        #[arg(long, default_value = "http://127.0.0.1:3338", requires = "dir")]
        mint: String,
        #[command(subcommand)]
        command: translator::cli::WalletCommand,
    },
    /// Verifies a mint's whole issuance: downloads the proof of every ehash
    /// quote it issued and re-checks each offline (proof of work, merkle
    /// root, pool payment, key commitment, amount), that no share was paid
    /// twice, and that the totals equal the mint's own. Exits non-zero
    /// naming the first bad entry.
    Audit {
        /// The mint's Cashu API URL.
        #[arg(long, default_value = "http://127.0.0.1:3338")]
        mint: String,
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
    let runtime = match roles_common::new_runtime("hashpool") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match cli.command {
        Command::Devnet {
            profile,
            ephemeral_ports,
            jd,
            scale_out,
        } => devnet(&runtime, &profile, ephemeral_ports, jd, scale_out),
        Command::Wallet {
            profile,
            dir,
            mint,
            command,
        } => wallet(&runtime, &profile, dir.as_deref(), &mint, command),
        Command::Audit { mint } => audit(&runtime, &mint),
    }
}

fn audit(runtime: &tokio::runtime::Runtime, mint: &str) -> ExitCode {
    eprintln!("hashpool audit: reading the issuance audit of {mint}");
    let source = audit::MintAudit::new(mint);
    // One bar redrawn in place on a terminal, a line per page otherwise.
    let redraw = std::io::stderr().is_terminal();
    let progress = |done, of| {
        let line = audit::progress_line(done, of);
        match (redraw, done == of) {
            (true, false) => eprint!("\r{line}"),
            (true, true) => eprintln!("\r{line}"),
            (false, _) => eprintln!("{line}"),
        }
    };
    match runtime.block_on(audit::audit(&source, progress)) {
        Ok(report) => {
            print!("{}", audit::describe(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hashpool audit: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(profile: &ProfileArgs) -> Result<profile::DevnetConfigs, ExitCode> {
    profile
        .load()
        .map_err(|e| roles_common::bad_config("hashpool", &e))
}

fn devnet(
    runtime: &tokio::runtime::Runtime,
    profile: &ProfileArgs,
    ephemeral_ports: bool,
    declared_jobs: bool,
    scale_out: bool,
) -> ExitCode {
    let mut configs = match load(profile) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if declared_jobs {
        configs.use_declared_jobs();
    }
    if scale_out {
        configs.use_scale_out();
    }
    if ephemeral_ports {
        configs.use_ephemeral_ports();
    }
    // Held until the process exits.
    let _state_dir = match state_dir::take_state_dir(&configs) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("hashpool: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = devnet::init_logging(&configs.state_dir) {
        eprintln!("hashpool: {e}");
        return ExitCode::FAILURE;
    }
    roles_common::run_until_signal(runtime, "devnet", "hashpool devnet", |shutdown| {
        devnet::run(configs, shutdown)
    })
}

fn wallet(
    runtime: &tokio::runtime::Runtime,
    profile: &ProfileArgs,
    dir: Option<&std::path::Path>,
    mint: &str,
    command: translator::cli::WalletCommand,
) -> ExitCode {
    let result = match dir {
        // A miner's own wallet needs no devnet profile.
        Some(dir) => runtime.block_on(async {
            let own = translator::wallet::OwnWallet::open(dir, mint)
                .await
                .map_err(|e| e.to_string())?;
            translator::cli::run_wallet_command_on(&own.wallet, &own.store, command).await
        }),
        None => match load(profile) {
            Ok(c) => runtime.block_on(translator::cli::run_wallet_command(&c.translator, command)),
            Err(code) => return code,
        },
    };
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
