//! SetCustomMiningJob: a job a work-selecting downstream declared at the
//! job declarator becomes its channel's active job; shares on it are
//! validated, credited and quoted like any other.

use ehash::wire::str0255_truncated;
use stratum_core::mining_sv2::{
    SetCustomMiningJobErrorOwned, SetCustomMiningJobOwned, SetCustomMiningJobSuccess,
};
use stratum_core::parsers_sv2::MiningOwned;
use tracing::{info, warn};

use super::{mining, Action, ConnId, PoolCore};

impl PoolCore {
    pub(super) fn set_custom_job(
        &mut self,
        conn: ConnId,
        m: SetCustomMiningJobOwned,
        now_ms: u64,
    ) -> Vec<Action> {
        let (channel_id, request_id) = (m.channel_id, m.request_id);
        let refuse = |code: &str| {
            vec![Action::Send(
                conn,
                mining(MiningOwned::SetCustomMiningJobError(
                    SetCustomMiningJobErrorOwned {
                        channel_id,
                        request_id,
                        error_code: str0255_truncated(code),
                    },
                )),
            )]
        };
        let Some(jds) = self.jds.as_deref() else {
            return refuse("jd-not-supported");
        };
        let mut jds = roles_common::lock(jds);
        let Some(channel) = self
            .channels
            .get_mut(&channel_id)
            .filter(|c| c.conn == conn && c.custom_work)
        else {
            warn!(
                conn,
                channel_id, "SetCustomMiningJob for no work-selecting channel of this connection"
            );
            return refuse("invalid-channel-id");
        };
        if let Err(refusal) = jds.check_custom_job(&m, channel.locking_key.as_ref(), now_ms) {
            warn!(
                conn,
                channel_id,
                code = refusal.code,
                "custom job refused: {}",
                refusal.reason
            );
            return refuse(refusal.code);
        }
        let token = m.token.as_bytes().to_vec();
        match channel.on_set_custom_mining_job(m) {
            Ok(job_id) => {
                jds.custom_job_set(&token, channel_id);
                info!(conn, channel_id, job_id, "custom job set");
                vec![Action::Send(
                    conn,
                    mining(MiningOwned::SetCustomMiningJobSuccess(
                        SetCustomMiningJobSuccess {
                            channel_id,
                            request_id,
                            job_id,
                        },
                    )),
                )]
            }
            Err((e, code)) => {
                // The address too: the bounds on custom jobs count by it.
                let peer = self
                    .connections
                    .get(&conn)
                    .map(|c| roles_common::limits::counted_as(c.peer));
                warn!(
                    conn,
                    peer = peer.unwrap_or_default(),
                    channel_id,
                    code,
                    "custom job refused by its channel: {e}"
                );
                refuse(code)
            }
        }
    }
}
