use std::process::ExitCode;

fn main() -> ExitCode {
    roles_common::role_main("jd-client", "JD_CLIENT", jd_client::run)
}
