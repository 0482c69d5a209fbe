//! Which network a role serves, and the refusal of the devnet's published
//! keys and mnemonics anywhere else.
//!
//! The files in `config/` ship key pairs and mnemonics so the devnet runs
//! with no set-up. They are public: funds or ecash behind them belong to
//! anyone. A role whose config names one of them starts only with
//! `network = "devnet"`.

use std::fmt;

use serde::Deserialize;
use stratum_apps::key_utils::Secp256k1PublicKey;

use crate::ConfigError;

/// The network in a role's config (`network = "..."`). Mainnet unless the
/// file says otherwise, so a forgotten line never lets devnet keys through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[default]
    Mainnet,
    Testnet,
    Testnet4,
    Signet,
    Regtest,
    /// The private chain of `devnet-tp` (`hashpool devnet`).
    Devnet,
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Network::Mainnet => "mainnet",
            Network::Testnet => "testnet",
            Network::Testnet4 => "testnet4",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
            Network::Devnet => "devnet",
        })
    }
}

/// Public halves of every key pair shipped in `config/` (a secret key is
/// checked through its public key).
pub const DEVNET_PUBLIC_KEYS: [&str; 5] = [
    // devnet-tp authority
    "9bdyeVkC5fwmkbE4kjccrPTFc5A3KkbEefiVna1Y1QqtG1BThwg",
    // pool authority
    "9cGDAZn9tTT7kjuAuu8KGgeG4N4TB1tDK1vgq9rte85NgN3Q1GS",
    // pool identity towards the mint
    "9agtKxDCNZ7BwrfFkX7pNY7qRvDcXaCqoW928MhFP8LE4yen9Sm",
    // mint authority
    "9b9oyp3LfkcRiY43QM4ZvBviGwCRiggXmXfxsCwKykUzNYaacVd",
    // jd-client authority
    "9bsfVpaogAt8aYSqBXuvtX11jxsLiScPJy6iRTgE7vHpUumYcBJ",
];

/// Mnemonics shipped in `config/`: the mint's, and the translator wallet's
/// (the BIP-39 test mnemonic).
pub const DEVNET_MNEMONICS: [&str; 2] = [
    "order shock flip tribe strong rigid planet deputy question matter decide little",
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
];

/// Refuses a devnet key on any network but the devnet. Pass the public key
/// (or the public half of a secret key).
pub fn refuse_devnet_key(
    network: Network,
    field: &str,
    key: &Secp256k1PublicKey,
) -> Result<(), ConfigError> {
    let bytes = key.into_bytes();
    let is_devnet = DEVNET_PUBLIC_KEYS.iter().any(|k| {
        k.parse::<Secp256k1PublicKey>()
            .is_ok_and(|k| k.into_bytes() == bytes)
    });
    refuse_if(is_devnet, network, field, "key")
}

/// Refuses a devnet mnemonic on any network but the devnet (word case and
/// spacing do not matter).
pub fn refuse_devnet_mnemonic(
    network: Network,
    field: &str,
    mnemonic: &str,
) -> Result<(), ConfigError> {
    let words = normalize(mnemonic);
    let is_devnet = DEVNET_MNEMONICS.iter().any(|m| normalize(m) == words);
    refuse_if(is_devnet, network, field, "mnemonic")
}

fn normalize(mnemonic: &str) -> String {
    mnemonic
        .split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

fn refuse_if(
    is_devnet: bool,
    network: Network,
    field: &str,
    what: &str,
) -> Result<(), ConfigError> {
    if is_devnet && network != Network::Devnet {
        return Err(ConfigError::new(
            field,
            format!(
                "is the published devnet {what}, refused on network \"{network}\": \
                 generate your own (or set network = \"devnet\")"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_apps::key_utils::Secp256k1SecretKey;

    #[test]
    fn devnet_keys_pass_on_the_devnet_only() {
        for k in DEVNET_PUBLIC_KEYS {
            let key: Secp256k1PublicKey = k.parse().unwrap();
            assert!(refuse_devnet_key(Network::Devnet, "k", &key).is_ok());
            for network in [Network::Mainnet, Network::Testnet4, Network::Regtest] {
                let err = refuse_devnet_key(network, "authority_public_key", &key).unwrap_err();
                assert_eq!(err.field, "authority_public_key");
                assert!(err.reason.contains(&network.to_string()), "{err}");
            }
        }
    }

    #[test]
    fn a_devnet_secret_key_is_caught_through_its_public_half() {
        // The pool's authority secret key from config/pool.toml.
        let secret: Secp256k1SecretKey = "68P61KGyRfXaGyFMTJM5VDWzL2oAJonTveBmYhNESX6BarASm"
            .parse()
            .unwrap();
        let public: Secp256k1PublicKey = secret.into();
        assert!(refuse_devnet_key(Network::Mainnet, "authority_secret_key", &public).is_err());
    }

    #[test]
    fn other_keys_pass_everywhere() {
        // Any other key (the tests' "wrong pool key").
        let public: Secp256k1PublicKey = "9azwdG9sKYpNJJJjMv2L6dFhZ3VorymaC7eBAbKmKvSU6D5KPQS"
            .parse()
            .unwrap();
        assert!(refuse_devnet_key(Network::Mainnet, "k", &public).is_ok());
    }

    #[test]
    fn devnet_mnemonics_are_refused_off_the_devnet_however_spaced() {
        let spaced = "  ABANDON abandon abandon abandon abandon abandon abandon abandon abandon\n\
                      abandon abandon about ";
        assert!(refuse_devnet_mnemonic(Network::Mainnet, "mnemonic", spaced).is_err());
        assert!(refuse_devnet_mnemonic(Network::Devnet, "mnemonic", spaced).is_ok());
        let own = "legal winner thank year wave sausage worth useful legal winner thank yellow";
        assert!(refuse_devnet_mnemonic(Network::Mainnet, "mnemonic", own).is_ok());
    }

    #[test]
    fn network_names_parse_and_default_to_mainnet() {
        #[derive(Deserialize)]
        struct C {
            #[serde(default)]
            network: Network,
        }
        let c: C = toml::from_str("").unwrap();
        assert_eq!(c.network, Network::Mainnet);
        let c: C = toml::from_str("network = \"devnet\"").unwrap();
        assert_eq!(c.network, Network::Devnet);
        assert!(toml::from_str::<C>("network = \"moon\"").is_err());
    }
}
