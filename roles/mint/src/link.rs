//! The pool link session, without IO: which message is acceptable in which
//! state, and what to answer. The socket loop lives in `io`.
//!
//! AwaitSetup --SetupConnection--> AwaitProof --PoolAuthProof--> Authenticated
//!
//! Before authentication every other message closes the connection.

use ehash::wire::{str0255_truncated, MessageSet};
use mint_quote_sv2::{
    auth, error_code, MintQuoteMessage, MintQuoteRequestOwned, PoolAuthErrorOwned, PoolAuthSuccess,
    SetupConnectionOwned, PROTOCOL, PROTOCOL_VERSION,
};
use stratum_core::bitcoin::secp256k1::XOnlyPublicKey;
use stratum_core::common_messages_sv2::{SetupConnectionErrorOwned, SetupConnectionSuccess};

/// What the IO loop must do after a message.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Send these, keep reading.
    Reply(Vec<MintQuoteMessage>),
    /// Send these, then close the connection for `reason`.
    Close {
        reply: Vec<MintQuoteMessage>,
        reason: String,
    },
    /// Serve a quote request (authenticated).
    Quote(MintQuoteRequestOwned),
    /// Serve a stats request (authenticated).
    Stats(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    AwaitSetup,
    AwaitProof { challenge: [u8; 32] },
    Authenticated { pool_key: XOnlyPublicKey },
}

#[derive(Debug)]
pub struct LinkSession {
    state: State,
    challenge: [u8; 32],
    mint_key: XOnlyPublicKey,
    allowed: Vec<XOnlyPublicKey>,
    unit_bits: u8,
}

impl LinkSession {
    /// A session for one connection; `challenge` must be fresh random bytes.
    pub fn new(
        challenge: [u8; 32],
        mint_key: XOnlyPublicKey,
        allowed: Vec<XOnlyPublicKey>,
        unit_bits: u8,
    ) -> Self {
        Self {
            state: State::AwaitSetup,
            challenge,
            mint_key,
            allowed,
            unit_bits,
        }
    }

    /// The authenticated pool key, once there is one.
    pub fn pool_key(&self) -> Option<XOnlyPublicKey> {
        match self.state {
            State::Authenticated { pool_key } => Some(pool_key),
            _ => None,
        }
    }

    pub fn on_message(&mut self, message: MintQuoteMessage) -> Step {
        match (&self.state, message) {
            (State::AwaitSetup, MintQuoteMessage::SetupConnection(setup)) => self.on_setup(setup),
            (State::AwaitProof { challenge }, MintQuoteMessage::PoolAuthProof(proof)) => {
                match auth::verify_proof(challenge, &self.mint_key, &proof, &self.allowed) {
                    Ok(pool_key) => {
                        self.state = State::Authenticated { pool_key };
                        Step::Reply(vec![MintQuoteMessage::PoolAuthSuccess(PoolAuthSuccess {
                            unit_bits: self.unit_bits,
                        })])
                    }
                    Err(e) => close_with_auth_error(
                        e.error_code(),
                        format!("pool authentication failed: {e}"),
                    ),
                }
            }
            (State::Authenticated { .. }, MintQuoteMessage::MintQuoteRequest(request)) => {
                Step::Quote(request)
            }
            (State::Authenticated { .. }, MintQuoteMessage::MintStatsRequest(request)) => {
                Step::Stats(request.request_id)
            }
            (State::AwaitSetup, other) => Step::Close {
                reply: vec![],
                reason: format!("{} before SetupConnection", other.name()),
            },
            (State::AwaitProof { .. }, other) => close_with_auth_error(
                error_code::NOT_AUTHENTICATED,
                format!("{} before the pool proved its identity", other.name()),
            ),
            (State::Authenticated { .. }, other) => Step::Close {
                reply: vec![],
                reason: format!("unexpected {} from the pool", other.name()),
            },
        }
    }

    fn on_setup(&mut self, setup: SetupConnectionOwned) -> Step {
        let refuse = |code: &str, reason: String| Step::Close {
            reply: vec![MintQuoteMessage::SetupConnectionError(
                SetupConnectionErrorOwned {
                    flags: 0,
                    error_code: str0255_truncated(code),
                },
            )],
            reason,
        };
        if setup.protocol != PROTOCOL {
            return refuse(
                "unsupported-protocol",
                format!(
                    "SetupConnection for protocol {}, not mint-quote ({PROTOCOL})",
                    setup.protocol
                ),
            );
        }
        if !(setup.min_version..=setup.max_version).contains(&PROTOCOL_VERSION) {
            return refuse(
                "protocol-version-mismatch",
                format!(
                    "SetupConnection for versions {}..={}, mint speaks {PROTOCOL_VERSION}",
                    setup.min_version, setup.max_version
                ),
            );
        }
        self.state = State::AwaitProof {
            challenge: self.challenge,
        };
        Step::Reply(vec![
            MintQuoteMessage::SetupConnectionSuccess(SetupConnectionSuccess {
                used_version: PROTOCOL_VERSION,
                flags: 0,
            }),
            MintQuoteMessage::PoolAuthChallenge(auth::challenge(self.challenge)),
        ])
    }
}

fn close_with_auth_error(code: &str, reason: String) -> Step {
    Step::Close {
        reply: vec![MintQuoteMessage::PoolAuthError(PoolAuthErrorOwned {
            error_code: str0255_truncated(code),
        })],
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ehash::wire::str0255;
    use mint_quote_sv2::auth::testing::{key, xonly};
    use mint_quote_sv2::MintStatsRequest;

    fn setup(protocol: u8, min_version: u16, max_version: u16) -> MintQuoteMessage {
        let s = |t: &str| str0255("test", t).unwrap();
        MintQuoteMessage::SetupConnection(SetupConnectionOwned {
            protocol,
            min_version,
            max_version,
            flags: 0,
            endpoint_host: s("127.0.0.1"),
            endpoint_port: 34260,
            vendor: s("test"),
            hardware_version: s(""),
            firmware: s(""),
            device_id: s(""),
        })
    }

    fn session() -> LinkSession {
        LinkSession::new([9; 32], xonly(&key(2)), vec![xonly(&key(1))], 8)
    }

    fn proof(pool: u8, challenge: [u8; 32]) -> MintQuoteMessage {
        MintQuoteMessage::PoolAuthProof(auth::sign_proof(&challenge, &xonly(&key(2)), &key(pool)))
    }

    fn stats() -> MintQuoteMessage {
        MintQuoteMessage::MintStatsRequest(MintStatsRequest { request_id: 1 })
    }

    #[test]
    fn setup_then_proof_authenticates() {
        let mut s = session();
        match s.on_message(setup(PROTOCOL, PROTOCOL_VERSION, PROTOCOL_VERSION)) {
            Step::Reply(reply) => {
                assert_eq!(reply.len(), 2);
                assert_eq!(
                    reply[1],
                    MintQuoteMessage::PoolAuthChallenge(auth::challenge([9; 32]))
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.on_message(proof(1, [9; 32])),
            Step::Reply(vec![MintQuoteMessage::PoolAuthSuccess(PoolAuthSuccess {
                unit_bits: 8
            })])
        );
        assert_eq!(s.pool_key(), Some(xonly(&key(1))));
        assert_eq!(s.on_message(stats()), Step::Stats(1));
    }

    #[test]
    fn requests_before_authentication_close_the_connection() {
        let mut s = session();
        assert!(matches!(s.on_message(stats()), Step::Close { ref reply, .. } if reply.is_empty()));

        let mut s = session();
        s.on_message(setup(PROTOCOL, PROTOCOL_VERSION, PROTOCOL_VERSION));
        match s.on_message(stats()) {
            Step::Close { reply, reason } => {
                assert!(
                    reason.contains("before the pool proved its identity"),
                    "{reason}"
                );
                assert!(matches!(&reply[0], MintQuoteMessage::PoolAuthError(e)
                    if e.error_code.as_bytes() == b"not-authenticated"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.pool_key(), None);
    }

    #[test]
    fn wrong_key_and_replayed_proof_are_refused() {
        let mut s = session();
        s.on_message(setup(PROTOCOL, PROTOCOL_VERSION, PROTOCOL_VERSION));
        assert!(matches!(
            s.on_message(proof(3, [9; 32])),
            Step::Close { .. }
        ));

        // A proof made for another session's challenge.
        let mut s = session();
        s.on_message(setup(PROTOCOL, PROTOCOL_VERSION, PROTOCOL_VERSION));
        assert!(matches!(
            s.on_message(proof(1, [8; 32])),
            Step::Close { .. }
        ));
        assert_eq!(s.pool_key(), None);
    }

    #[test]
    fn other_protocols_and_versions_are_refused() {
        let mut s = session();
        assert!(matches!(s.on_message(setup(0, 2, 2)), Step::Close { .. }));
        // Version 1 requests carried no coinbase proof.
        let mut s = session();
        match s.on_message(setup(PROTOCOL, 1, 1)) {
            Step::Close { reply, reason } => {
                assert!(reason.contains("versions 1..=1, mint speaks 2"), "{reason}");
                assert!(
                    matches!(&reply[0], MintQuoteMessage::SetupConnectionError(e)
                    if e.error_code.as_bytes() == b"protocol-version-mismatch")
                );
            }
            other => panic!("{other:?}"),
        }
        let mut s = session();
        assert!(matches!(
            s.on_message(setup(PROTOCOL, 3, 4)),
            Step::Close { .. }
        ));
    }

    #[test]
    fn a_second_proof_is_unexpected() {
        let mut s = session();
        s.on_message(setup(PROTOCOL, PROTOCOL_VERSION, PROTOCOL_VERSION));
        s.on_message(proof(1, [9; 32]));
        let again = proof(1, [9; 32]);
        assert!(matches!(s.on_message(again), Step::Close { .. }));
    }
}
