//! A downstream connection: SetupConnection, extension negotiation (the
//! ehash extension), and what its disconnect closes.

use std::collections::HashSet;
use std::net::IpAddr;

use ehash::wire::str0255_truncated;
use ehash_ext_sv2::EHASH_EXTENSION_TYPE;
use roles_common::log_limit::LogLimit;
use stratum_core::binary_sv2::Seq064KOwned;
use stratum_core::common_messages_sv2::{
    Protocol, SetupConnectionErrorOwned, SetupConnectionOwned, SetupConnectionSuccessOwned,
};
use stratum_core::extensions_sv2::{
    RequestExtensionsErrorOwned, RequestExtensionsOwned, RequestExtensionsSuccessOwned,
};
use stratum_core::parsers_sv2::{
    AnyMessageOwned, CommonMessagesOwned, ExtensionsNegotiationOwned, ExtensionsOwned,
};
use tracing::{info, warn};

use super::{
    Action, ConnId, PoolCore, StatsEvent, ERROR_UNSUPPORTED_FLAGS, ERROR_UNSUPPORTED_PROTOCOL,
};

#[derive(Debug)]
pub(super) struct ConnState {
    /// The peer's address.
    pub peer: IpAddr,
    pub setup_done: bool,
    pub ehash: bool,
    /// REQUIRES_WORK_SELECTION: its channels mine only the custom jobs it
    /// sets (declared at the job declarator), never the pool's templates.
    pub work_selection: bool,
    pub channels: HashSet<u32>,
    /// Warnings about what this peer sends, rate-limited.
    pub warnings: LogLimit,
}

impl PoolCore {
    /// A downstream connected from `peer`.
    pub fn on_connect(&mut self, conn: ConnId, peer: IpAddr) {
        let state = ConnState {
            peer,
            setup_done: false,
            ehash: false,
            work_selection: false,
            channels: HashSet::new(),
            warnings: LogLimit::default(),
        };
        self.connections.insert(conn, state);
    }

    /// Warns about something `conn` sent, at most once per interval for
    /// each connection: a peer cannot flood the log by repeating it.
    pub(super) fn warn_peer(&mut self, conn: ConnId, what: std::fmt::Arguments) {
        let left_out = match self.connections.get_mut(&conn) {
            Some(state) => state.warnings.check(std::time::Instant::now()),
            None => Some(0),
        };
        if let Some(left_out) = left_out {
            warn!(conn, left_out, "{what}");
        }
    }

    /// Drops a connection and its channels (freeing their extranonce
    /// prefixes); returns the stats events saying so.
    pub fn on_disconnect(&mut self, conn: ConnId) -> Vec<Action> {
        let Some(state) = self.connections.remove(&conn) else {
            return vec![];
        };
        self.address_channels
            .remove(state.peer, state.channels.len());
        let mut channels: Vec<u32> = state.channels.into_iter().collect();
        channels.sort_unstable();
        let mut actions = Vec::new();
        for channel_id in channels {
            self.channels.remove(&channel_id);
            actions.push(Action::Stats(StatsEvent::ChannelClosed {
                conn,
                channel_id,
            }));
        }
        if state.setup_done {
            actions.push(Action::Stats(StatsEvent::DownstreamDisconnected { conn }));
        }
        actions
    }

    pub(super) fn on_setup_connection(
        &mut self,
        conn: ConnId,
        m: SetupConnectionOwned,
    ) -> Vec<Action> {
        if let Err((code, reason)) = setup_refusal(&m, self.jds.is_some()) {
            return vec![
                Action::Send(
                    conn,
                    AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(
                        SetupConnectionErrorOwned {
                            flags: 0,
                            error_code: str0255_truncated(code),
                        },
                    )),
                ),
                Action::Close(conn, reason),
            ];
        }
        let work_selection = m.flags & REQUIRES_WORK_SELECTION != 0;
        if let Some(state) = self.connections.get_mut(&conn) {
            state.setup_done = true;
            state.work_selection = work_selection;
        }
        info!(
            conn,
            vendor = %String::from_utf8_lossy(m.vendor.as_bytes()),
            flags = m.flags,
            "SetupConnection accepted"
        );
        vec![
            Action::Send(
                conn,
                AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionSuccess(
                    SetupConnectionSuccessOwned {
                        used_version: 2,
                        // Custom jobs go on extended channels only.
                        flags: if work_selection {
                            REQUIRES_EXTENDED_CHANNELS
                        } else {
                            0
                        },
                    },
                )),
            ),
            Action::Stats(StatsEvent::DownstreamConnected {
                conn,
                flags: m.flags,
            }),
        ]
    }

    /// Grants the requested extensions the pool supports (the ehash one);
    /// RequestExtensions.Error only when none of them is supported, as SRI
    /// roles do. Unknown ones are refused by their absence from the Success.
    pub(super) fn on_request_extensions(
        &mut self,
        conn: ConnId,
        m: RequestExtensionsOwned,
    ) -> Vec<Action> {
        let requested = m.requested_extensions.into_inner();
        let (supported, unsupported): (Vec<u16>, Vec<u16>) = requested
            .iter()
            .copied()
            .partition(|e| *e == EHASH_EXTENSION_TYPE);
        let reply = if !supported.is_empty() {
            if let Some(state) = self.connections.get_mut(&conn) {
                state.ehash = true;
            }
            info!(conn, ?unsupported, "ehash extension negotiated");
            ExtensionsNegotiationOwned::RequestExtensionsSuccess(RequestExtensionsSuccessOwned {
                request_id: m.request_id,
                supported_extensions: Seq064KOwned::new(vec![EHASH_EXTENSION_TYPE])
                    .expect("one element"),
            })
        } else {
            info!(
                conn,
                ?unsupported,
                "refusing RequestExtensions: none supported"
            );
            ExtensionsNegotiationOwned::RequestExtensionsError(RequestExtensionsErrorOwned {
                request_id: m.request_id,
                unsupported_extensions: Seq064KOwned::new(unsupported)
                    .unwrap_or_else(|_| Seq064KOwned::new(Vec::new()).expect("empty")),
                required_extensions: Seq064KOwned::new(Vec::new()).expect("empty"),
            })
        };
        vec![Action::Send(
            conn,
            AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(reply)),
        )]
    }
}

/// Mining SetupConnection flag: the downstream selects its own work.
const REQUIRES_WORK_SELECTION: u32 = 0b10;
/// Mining SetupConnection.Success flag: standard channels are refused.
const REQUIRES_EXTENDED_CHANNELS: u32 = 0b10;

/// Why a SetupConnection is refused: the error code and the logged reason.
/// Work selection is offered only with a job declarator (`jds`).
fn setup_refusal(m: &SetupConnectionOwned, jds: bool) -> Result<(), (&'static str, String)> {
    if m.protocol != Protocol::MiningProtocol {
        return Err((
            ERROR_UNSUPPORTED_PROTOCOL,
            format!("SetupConnection for protocol {:?}", m.protocol),
        ));
    }
    if m.min_version > 2 || m.max_version < 2 {
        return Err((
            "protocol-version-mismatch",
            format!(
                "SetupConnection for versions {}..={}",
                m.min_version, m.max_version
            ),
        ));
    }
    if m.flags & REQUIRES_WORK_SELECTION != 0 && !jds {
        return Err((
            ERROR_UNSUPPORTED_FLAGS,
            "downstream requires work selection, and this pool runs no job declarator".into(),
        ));
    }
    Ok(())
}
