//! The pool's side of the link handshake, without IO: SetupConnection, then
//! answering the mint's challenge, then waiting for PoolAuthSuccess.

use ehash::wire::{str0255_truncated, MessageSet};
use stratum_core::bitcoin::secp256k1::{SecretKey, XOnlyPublicKey};

use crate::{auth, MintQuoteMessage, SetupConnectionOwned, PROTOCOL, PROTOCOL_VERSION};

/// Why the handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("the mint refused SetupConnection: {0}")]
    SetupRefused(String),
    #[error("the mint refused the pool's identity: {0}")]
    AuthRefused(String),
    #[error("the mint uses unit_bits {mint}, the pool {pool}: fix one of the configs")]
    UnitBitsMismatch { mint: u8, pool: u8 },
    #[error("unexpected {0} during the handshake")]
    Unexpected(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitSetupSuccess,
    AwaitChallenge,
    AwaitResult,
    Done,
}

/// One handshake with the mint `mint_key`, as the pool holding `pool_secret`.
pub struct ClientHandshake {
    state: State,
    mint_key: XOnlyPublicKey,
    pool_secret: SecretKey,
    unit_bits: u8,
}

/// What to do after a message from the mint.
#[derive(Debug, PartialEq)]
pub enum HandshakeStep {
    /// Send this and keep reading.
    Send(Box<MintQuoteMessage>),
    /// Nothing to send; keep reading.
    Wait,
    /// Authenticated: quote and stats requests may flow.
    Done,
}

impl ClientHandshake {
    pub fn new(mint_key: XOnlyPublicKey, pool_secret: SecretKey, unit_bits: u8) -> Self {
        Self {
            state: State::AwaitSetupSuccess,
            mint_key,
            pool_secret,
            unit_bits,
        }
    }

    /// The first message: SetupConnection for the mint-quote protocol.
    pub fn setup_connection(&self, endpoint_host: &str, endpoint_port: u16) -> MintQuoteMessage {
        MintQuoteMessage::SetupConnection(SetupConnectionOwned {
            protocol: PROTOCOL,
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            flags: 0,
            endpoint_host: str0255_truncated(endpoint_host),
            endpoint_port,
            vendor: str0255_truncated("hashpool"),
            hardware_version: str0255_truncated(""),
            firmware: str0255_truncated(env!("CARGO_PKG_VERSION")),
            device_id: str0255_truncated("pool"),
        })
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn on_message(
        &mut self,
        message: MintQuoteMessage,
    ) -> Result<HandshakeStep, HandshakeError> {
        match (self.state, message) {
            (State::AwaitSetupSuccess, MintQuoteMessage::SetupConnectionSuccess(_)) => {
                self.state = State::AwaitChallenge;
                Ok(HandshakeStep::Wait)
            }
            (State::AwaitSetupSuccess, MintQuoteMessage::SetupConnectionError(e)) => {
                Err(HandshakeError::SetupRefused(e.error_code.as_utf8_or_hex()))
            }
            (State::AwaitChallenge, MintQuoteMessage::PoolAuthChallenge(c)) => {
                self.state = State::AwaitResult;
                let proof =
                    auth::sign_proof(&c.challenge.to_array(), &self.mint_key, &self.pool_secret);
                Ok(HandshakeStep::Send(Box::new(
                    MintQuoteMessage::PoolAuthProof(proof),
                )))
            }
            (State::AwaitResult, MintQuoteMessage::PoolAuthSuccess(s)) => {
                if s.unit_bits != self.unit_bits {
                    return Err(HandshakeError::UnitBitsMismatch {
                        mint: s.unit_bits,
                        pool: self.unit_bits,
                    });
                }
                self.state = State::Done;
                Ok(HandshakeStep::Done)
            }
            (_, MintQuoteMessage::PoolAuthError(e)) => {
                Err(HandshakeError::AuthRefused(e.error_code.as_utf8_or_hex()))
            }
            (_, other) => Err(HandshakeError::Unexpected(other.name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testing::{key, xonly};
    use crate::{PoolAuthErrorOwned, PoolAuthSuccess};
    use ehash::wire::str0255;
    use stratum_core::common_messages_sv2::SetupConnectionSuccess;

    fn success() -> MintQuoteMessage {
        MintQuoteMessage::SetupConnectionSuccess(SetupConnectionSuccess {
            used_version: 1,
            flags: 0,
        })
    }

    #[test]
    fn answers_the_challenge_with_a_proof_the_mint_accepts() {
        let mut h = ClientHandshake::new(xonly(&key(2)), key(1), 8);
        assert!(
            matches!(h.setup_connection("mint", 34260), MintQuoteMessage::SetupConnection(s) if s.protocol == PROTOCOL)
        );
        assert_eq!(h.on_message(success()), Ok(HandshakeStep::Wait));
        let step = h
            .on_message(MintQuoteMessage::PoolAuthChallenge(auth::challenge(
                [5; 32],
            )))
            .unwrap();
        let HandshakeStep::Send(message) = step else {
            panic!("{step:?}")
        };
        let MintQuoteMessage::PoolAuthProof(proof) = *message else {
            panic!("{message:?}")
        };
        assert_eq!(
            auth::verify_proof(&[5; 32], &xonly(&key(2)), &proof, &[xonly(&key(1))]),
            Ok(xonly(&key(1)))
        );
        assert!(!h.is_done());
        assert_eq!(
            h.on_message(MintQuoteMessage::PoolAuthSuccess(PoolAuthSuccess {
                unit_bits: 8
            })),
            Ok(HandshakeStep::Done)
        );
        assert!(h.is_done());
    }

    #[test]
    fn refusals_and_mismatches_are_errors() {
        let mut h = ClientHandshake::new(xonly(&key(2)), key(1), 8);
        h.on_message(success()).unwrap();
        h.on_message(MintQuoteMessage::PoolAuthChallenge(auth::challenge(
            [5; 32],
        )))
        .unwrap();
        assert_eq!(
            h.on_message(MintQuoteMessage::PoolAuthSuccess(PoolAuthSuccess {
                unit_bits: 0
            })),
            Err(HandshakeError::UnitBitsMismatch { mint: 0, pool: 8 })
        );

        let mut h = ClientHandshake::new(xonly(&key(2)), key(1), 8);
        let refused = MintQuoteMessage::PoolAuthError(PoolAuthErrorOwned {
            error_code: str0255("e", "unknown-pool-key").unwrap(),
        });
        assert_eq!(
            h.on_message(refused),
            Err(HandshakeError::AuthRefused("unknown-pool-key".into()))
        );

        let mut h = ClientHandshake::new(xonly(&key(2)), key(1), 8);
        assert_eq!(
            h.on_message(MintQuoteMessage::PoolAuthChallenge(auth::challenge(
                [5; 32]
            ))),
            Err(HandshakeError::Unexpected("PoolAuthChallenge"))
        );
    }
}
