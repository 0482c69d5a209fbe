use std::process::ExitCode;

fn main() -> ExitCode {
    stats_common::main::<proxy_stats::ProxyStats>()
}
