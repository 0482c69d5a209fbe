//! What the roles' own tests share: their shipped config files and running
//! their binaries. Not for production code.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The path of the shipped `config/<name>`, from any crate's tests.
pub fn shipped_config_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config")
        .join(name)
}

/// The shipped `config/<name>`, loaded as the role loads it.
pub fn load_shipped<C>(name: &str) -> C
where
    C: serde::de::DeserializeOwned + crate::Validate,
{
    crate::load_config(&shipped_config_path(name), "HASHPOOL_TEST_SHIPPED")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The shipped `config/<name>` with each `(from, to)` replaced, written into
/// `dir`; its path.
pub fn shipped_config_with(dir: &Path, name: &str, replace: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(shipped_config_path(name)).expect("a shipped config");
    for (from, to) in replace {
        assert!(text.contains(from), "{name} has no {from:?}");
        text = text.replace(from, to);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("config written");
    path
}

/// Runs a role's binary to its end; panics with its stderr unless it
/// exits 0. Its stdout.
pub fn stdout_of(command: &mut Command) -> String {
    let out = command.output().expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Runs a role's binary that must refuse its config: exit code 2 and one
/// line on stderr that names each of `names`. That line.
pub fn refused_config(command: &mut Command, names: &[&str]) -> String {
    let out = command.output().expect("the binary runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).expect("UTF-8 output");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    for name in names {
        assert!(stderr.contains(name), "{stderr}");
    }
    stderr
}
