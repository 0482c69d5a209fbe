use std::process::ExitCode;

fn main() -> ExitCode {
    roles_common::role_main("miner", "MINER", miner::run)
}
