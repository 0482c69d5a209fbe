use std::process::ExitCode;

fn main() -> ExitCode {
    roles_common::role_main("proxy-stats", "PROXY_STATS", proxy_stats::run)
}
