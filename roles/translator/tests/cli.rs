//! The `translator` binary: bad config exits 2 with one line naming the
//! field; `wallet quotes` / `wallet balance` read the data_dir offline.

use std::path::Path;
use std::process::Command;

use translator::quotes::{QuoteRecord, QuoteState, QuoteStore};

const BIN: &str = env!("CARGO_BIN_EXE_translator");

fn config_text(data_dir: &Path) -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/translator.toml"),
    )
    .unwrap();
    shipped.replace(
        "data_dir = \"state/translator\"",
        &format!("data_dir = {:?}", data_dir.display().to_string()),
    )
}

#[test]
fn a_bad_config_exits_2_with_one_line_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(
        &path,
        config_text(dir.path()).replace("extranonce2_size = 4", "extranonce2_size = 1"),
    )
    .unwrap();
    for args in [vec![], vec!["wallet", "balance"]] {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("extranonce2_size"), "{err}");
    }
}

#[test]
fn wallet_quotes_and_balance_read_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, config_text(dir.path())).unwrap();
    {
        let store = QuoteStore::open(&dir.path().join("quotes.sqlite")).unwrap();
        store
            .insert(&QuoteRecord {
                quote_id: "quote-abc".into(),
                share_hash: "00ff".into(),
                amount: 42,
                locking_key: "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5"
                    .into(),
                keyset_id: "00aa".into(),
                channel_id: 3,
                sequence_number: 9,
                state: QuoteState::Foreign,
                created_at: 1,
                last_error: None,
            })
            .unwrap();
    }
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args(["wallet", "quotes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("quote-abc"))
        .expect("listed");
    assert!(line.contains("\t42\tminer-key\t02c6047f"), "{line}");

    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args(["wallet", "balance"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("balance: 0 hash"), "{text}");
    assert!(
        text.contains("quotes locked to miners' own keys: 1 (42 hash)"),
        "{text}"
    );
}
