//! The `translator` binary: bad config exits 2 with one line naming the
//! field; `wallet quotes` / `wallet balance` read the data_dir offline.

use std::path::{Path, PathBuf};
use std::process::Command;

use roles_common::testing::{refused_config, shipped_config_with, stdout_of};
use translator::quotes::{QuoteRecord, QuoteState, QuoteStore};

const BIN: &str = env!("CARGO_BIN_EXE_translator");

/// The shipped config with its data in `dir`, and `replace` done.
fn config(dir: &Path, replace: &[(&str, &str)]) -> PathBuf {
    let data_dir = format!("data_dir = {:?}", dir.display().to_string());
    let replace = [
        &[("data_dir = \"state/translator\"", data_dir.as_str())],
        replace,
    ]
    .concat();
    shipped_config_with(dir, "translator.toml", &replace)
}

/// `translator --config <path> <args>`.
fn translator(path: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.arg("--config").arg(path).args(args);
    command
}

#[test]
fn a_bad_config_exits_2_with_one_line_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        &[("extranonce2_size = 4", "extranonce2_size = 1")],
    );
    for args in [&[][..], &["wallet", "balance"]] {
        refused_config(&mut translator(&path, args), &["extranonce2_size"]);
    }
}

#[test]
fn wallet_quotes_and_balance_read_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), &[]);
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
    let text = stdout_of(&mut translator(&path, &["wallet", "quotes"]));
    let line = text
        .lines()
        .find(|l| l.starts_with("quote-abc"))
        .expect("listed");
    assert!(line.contains("\t42\tminer-key\t02c6047f"), "{line}");

    let text = stdout_of(&mut translator(&path, &["wallet", "balance"]));
    assert!(text.contains("balance: 0 hash"), "{text}");
    assert!(
        text.contains("quotes locked to miners' own keys: 1 (42 hash)"),
        "{text}"
    );
}

#[test]
fn wallet_quotes_lists_the_newest_thousand_and_says_how_many_are_older() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), &[]);
    {
        let store = QuoteStore::open(&dir.path().join("quotes.sqlite")).unwrap();
        let records: Vec<QuoteRecord> = (0..1_003)
            .map(|i| QuoteRecord {
                quote_id: format!("quote-{i}"),
                share_hash: format!("{i:064x}"),
                amount: 1,
                locking_key: "02aa".into(),
                keyset_id: "00aa".into(),
                channel_id: 3,
                sequence_number: i,
                state: QuoteState::Minted,
                created_at: u64::from(i),
                last_error: None,
            })
            .collect();
        store.record(&records, &[]).unwrap();
    }
    let text = stdout_of(&mut translator(&path, &["wallet", "quotes"]));
    let listed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split('\t').next())
        .filter(|id| id.starts_with("quote-"))
        .collect();
    assert_eq!(listed.len(), 1_000);
    assert_eq!((listed[0], listed[999]), ("quote-3", "quote-1002"));
    assert!(
        text.contains("# not listed: 3 older quotes and 0 older failures"),
        "{text}"
    );
}
