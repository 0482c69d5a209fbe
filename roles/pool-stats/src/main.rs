use std::process::ExitCode;

fn main() -> ExitCode {
    roles_common::role_main("pool-stats", "POOL_STATS", pool_stats::run)
}
