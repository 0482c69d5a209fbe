use std::process::ExitCode;

fn main() -> ExitCode {
    roles_common::role_main("devnet-tp", "DEVNET_TP", devnet_tp::run)
}
