//! Money and keys on disk: state directories only their owner can enter
//! (0700), wallet, mint and outbox files only their owner can read (0600),
//! and a warning for a config file that holds a secret others can read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` and its missing parents, each enterable by its owner only.
/// A directory that exists is left as it is: it may be shared (`/tmp`).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Makes `path` readable by its owner only, creating it empty if it does not
/// exist (SQLite opens an empty file as a new database, and gives its
/// journal files the same mode).
pub fn create_file(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

/// Replaces `path` with `bytes`, all or nothing across a crash: written to a
/// temporary file next to it (owner only), synced, renamed over it, and the
/// directory synced so the rename itself is durable.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_file_and_open(path, bytes)?.1
}

/// [`replace_file`], returning the new file open to read and append, with
/// the result of syncing the directory. The file is opened before the
/// rename: once renamed, the handle is the file at `path` whatever fails
/// after (a caller that appends must never go on with the old one).
pub fn replace_file_and_open(path: &Path, bytes: &[u8]) -> io::Result<(File, io::Result<()>)> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    let file = OpenOptions::new().read(true).append(true).open(&tmp)?;
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let synced = File::open(dir).and_then(|dir| dir.sync_all());
    Ok((file, synced))
}

/// Endings of field names whose values are secrets.
const SECRET_FIELDS: [&str; 3] = ["secret_key", "mnemonic", "secret"];

/// The warning to log when the config file at `path` sets a secret (a
/// `…secret_key`, `…secret` or `mnemonic` field) and group or others may
/// read it. Commented-out lines set nothing.
pub fn exposed_secret_warning(path: &Path) -> Option<String> {
    let mode = fs::metadata(path).ok()?.mode() & 0o777;
    if mode & 0o077 == 0 {
        return None;
    }
    let text = fs::read_to_string(path).ok()?;
    let field = text.lines().find_map(|line| {
        if line.trim_start().starts_with('#') {
            return None;
        }
        let (name, _) = line.split_once('=')?;
        let name = name.trim();
        SECRET_FIELDS
            .iter()
            .any(|s| name.ends_with(s))
            .then(|| name.to_string())
    })?;
    Some(format!(
        "{} sets `{field}` and is readable by group or others (mode {mode:o}): chmod 600 {}",
        path.display(),
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn new_directories_and_files_are_the_owners_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!((mode(&root.path().join("a")), mode(&dir)), (0o700, 0o700));
        let file = dir.join("db.sqlite");
        create_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        // An existing file keeps its content and loses other readers.
        fs::write(&file, b"kept").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        create_file(&file).unwrap();
        assert_eq!(
            (mode(&file), fs::read(&file).unwrap()),
            (0o600, b"kept".to_vec())
        );
    }

    #[test]
    fn an_existing_directory_is_left_as_it_is() {
        let root = tempfile::tempdir().unwrap();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        create_dir(root.path()).unwrap();
        assert_eq!(mode(root.path()), 0o755);
    }

    #[test]
    fn a_replaced_file_has_the_new_bytes_only_for_its_owner() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("journal");
        fs::write(&file, b"old").unwrap();
        replace_file(&file, b"new").unwrap();
        assert_eq!(
            (mode(&file), fs::read(&file).unwrap()),
            (0o600, b"new".to_vec())
        );
        assert!(!root.path().join("journal.tmp").exists());

        // The handle returned is the new file: what it appends is at `path`.
        let (mut appending, synced) = replace_file_and_open(&file, b"newer").unwrap();
        synced.unwrap();
        appending.write_all(b" and more").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"newer and more");
    }

    #[test]
    fn a_readable_config_with_a_secret_is_warned_about() {
        let root = tempfile::tempdir().unwrap();
        let config = root.path().join("pool.toml");
        fs::write(
            &config,
            "listen_address = \"x\"\nauthority_secret_key = \"k\"\n",
        )
        .unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
        let warning = exposed_secret_warning(&config).unwrap();
        assert!(
            warning.contains("authority_secret_key") && warning.contains("644"),
            "{warning}"
        );
        fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(exposed_secret_warning(&config), None);
        // A stats publisher secret counts too, wherever the table.
        for text in [
            "publisher_secret = \"0123456789abcdef\"\n",
            "[stats]\nsecret = \"0123456789abcdef\"\n",
        ] {
            fs::write(&config, text).unwrap();
            fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(exposed_secret_warning(&config).is_some(), "{text}");
        }
        // No secret in it, or only in a comment: nothing to say.
        fs::write(&config, "# secret = \"0123456789abcdef\"\n").unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(exposed_secret_warning(&config), None);
        fs::write(&config, "listen_address = \"x\"\n").unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(exposed_secret_warning(&config), None);
    }
}
