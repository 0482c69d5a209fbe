//! config/translator.toml loads; bad values stop with one line naming the field.

use std::path::{Path, PathBuf};

use translator::TranslatorConfig;

fn repo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/translator.toml")
}

fn load(text: &str) -> Result<TranslatorConfig, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("translator.toml");
    std::fs::write(&path, text).unwrap();
    roles_common::load_config(&path, "HASHPOOL_TEST_TRANSLATOR")
}

#[test]
fn the_shipped_config_loads() {
    let c: TranslatorConfig =
        roles_common::load_config(&repo_config(), "HASHPOOL_TEST_TRANSLATOR_REPO").unwrap();
    assert_eq!(c.listen_address.port(), 34255);
    assert_eq!(c.mint_url, "http://127.0.0.1:3338");
    assert_eq!(c.upstreams.len(), 1);
    assert_eq!(c.upstreams[0].address, "127.0.0.1:34254");
    assert_eq!(
        c.stats.expect("stats are published").address,
        "127.0.0.1:4001"
    );
}

#[test]
fn bad_fields_are_named_in_one_line() {
    let good = std::fs::read_to_string(repo_config()).unwrap();
    for (from, to, field) in [
        (
            "extranonce2_size = 4",
            "extranonce2_size = 9",
            "extranonce2_size",
        ),
        (
            "mint_url = \"http://127.0.0.1:3338\"",
            "mint_url = \"ftp://x\"",
            "mint_url",
        ),
        (
            "mnemonic = \"abandon",
            "mnemonic = \"zzz abandon",
            "mnemonic",
        ),
        (
            "nominal_hashrate = 1000000.0",
            "nominal_hashrate = -1.0",
            "nominal_hashrate",
        ),
        (
            "authority_public_key = \"9cGDAZn9",
            "authority_public_key = \"xx9cGDAZn9",
            "authority_public_key",
        ),
        (
            "keepalive_secs = 60",
            "keepalive_secs = \"soon\"",
            "keepalive_secs",
        ),
        (
            "keep_quotes_hours = 24",
            "keep_quotes_hours = 0",
            "keep_quotes_hours",
        ),
        (
            "address = \"127.0.0.1:4001\"",
            "address = \"nowhere\"",
            "stats.address",
        ),
        (
            "queue_capacity = 100000",
            "queue_capacity = 0",
            "stats.queue_capacity",
        ),
    ] {
        assert!(good.contains(from), "{from}");
        let err = load(&good.replace(from, to)).unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains(field), "{field}: {err}");
    }
    let no_upstreams = good.split("[[upstreams]]").next().unwrap().to_string() + "upstreams = []\n";
    assert!(load(&no_upstreams).unwrap_err().contains("upstreams"));
}
