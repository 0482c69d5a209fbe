use std::process::ExitCode;

fn main() -> ExitCode {
    stats_common::main::<pool_stats::PoolStats>()
}
