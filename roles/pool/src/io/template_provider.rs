//! The link to the template provider: reconnects with backoff, relays
//! templates and chain tips to the core and block solutions back.

use std::sync::Arc;
use std::time::Instant;

use ehash_ext_sv2::MessageSet;
use roles_common::backoff::Backoff;
use roles_common::solutions::SentSolutions;
use roles_common::sv2::{self, message_name, Incoming, Sv2Connection};
use stats_sv2::link;
use stratum_apps::key_utils::Secp256k1PublicKey;
use stratum_core::parsers_sv2::{AnyMessageOwned, TemplateDistributionOwned};
use stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraintsOwned, RequestTransactionDataOwned,
    RequestTransactionDataSuccessOwned, SubmitSolutionOwned,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{PoolEvent, Shared};
use crate::jds::Listed;

pub(crate) struct TpLink {
    pub address: String,
    pub authority_public_key: Secp256k1PublicKey,
}

pub(crate) async fn tp_loop(
    link: TpLink,
    shared: Arc<Shared>,
    mut solutions: mpsc::UnboundedReceiver<SubmitSolutionOwned>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    let mut sent = SentSolutions::default();
    loop {
        let (up, result) = tp_session(&link, &shared, &mut solutions, &mut sent, &shutdown).await;
        if shutdown.is_cancelled() {
            return;
        }
        let reason = match result {
            Ok(()) => "closed".to_string(),
            Err(e) => e,
        };
        let (retry_in, _) = backoff.after(up);
        warn!(
            address = %link.address,
            "template provider link down: {reason}; retrying in {retry_in:?}"
        );
        shared.stats.link_status(link::TEMPLATE_PROVIDER, false);
        let _ = shared
            .events
            .send(PoolEvent::TemplateProviderDisconnected { reason, retry_in });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(retry_in) => {}
        }
    }
}

/// One link to the template provider: when it came up (if it did), and
/// how it ended.
async fn tp_session(
    link: &TpLink,
    shared: &Arc<Shared>,
    solutions: &mut mpsc::UnboundedReceiver<SubmitSolutionOwned>,
    sent: &mut SentSolutions,
    shutdown: &CancellationToken,
) -> (Option<Instant>, Result<(), String>) {
    let (size, sigops) = shared.core().coinbase_output_constraints();
    let constraints = CoinbaseOutputConstraintsOwned {
        coinbase_output_max_additional_size: size,
        coinbase_output_max_additional_sigops: sigops,
    };
    let connected = sv2::connect_template_provider(
        &link.address,
        link.authority_public_key,
        "tp_authority_public_key",
        "pool",
        constraints,
    )
    .await;
    let mut conn = match connected {
        Ok(conn) => conn,
        Err(e) => return (None, Err(e)),
    };
    let up = Instant::now();
    let result = tp_serve(link, shared, &mut conn, solutions, sent, shutdown).await;
    drop(conn.reader);
    let _ = conn.writer.shutdown().await;
    (Some(up), result)
}

/// Relays templates to the core and solutions to the template provider.
async fn tp_serve(
    link: &TpLink,
    shared: &Arc<Shared>,
    conn: &mut Sv2Connection,
    solutions: &mut mpsc::UnboundedReceiver<SubmitSolutionOwned>,
    sent: &mut SentSolutions,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    info!(address = %link.address, "connected to the template provider");
    shared.core().on_template_provider_connected();
    shared.stats.link_status(link::TEMPLATE_PROVIDER, true);
    let _ = shared.events.send(PoolEvent::TemplateProviderConnected);
    for solution in sent.to_resend() {
        info!(
            template_id = solution.template_id,
            "sending SubmitSolution again: the last link may have lost it"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            sent = send_solution(conn, solution) => sent?,
        }
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            solution = solutions.recv() => {
                let Some(solution) = solution else { return Ok(()) };
                info!(template_id = solution.template_id, "sending SubmitSolution");
                sent.sent(&solution);
                send_solution(conn, solution).await?;
            }
            incoming = conn.reader.recv() => match incoming.map_err(|e| e.to_string())? {
                Incoming::Sv2(AnyMessageOwned::TemplateDistribution(
                    TemplateDistributionOwned::NewTemplate(t),
                )) => {
                    let template_id = t.template_id;
                    // The job declarator learns a later template on its tip
                    // (its outputs) apart from the core, and each template's
                    // transactions.
                    if !t.future_template {
                        shared.with_jds(|jds| jds.on_template(&t));
                    }
                    shared.apply(|core| core.on_new_template(t));
                    if shared.has_jds() {
                        conn.send(AnyMessageOwned::TemplateDistribution(
                            TemplateDistributionOwned::RequestTransactionData(
                                RequestTransactionDataOwned { template_id },
                            ),
                        ))
                        .await
                        .map_err(|e| e.to_string())?;
                    }
                }
                Incoming::Sv2(AnyMessageOwned::TemplateDistribution(
                    TemplateDistributionOwned::RequestTransactionDataSuccess(data),
                )) => template_transactions(shared, data),
                Incoming::Sv2(AnyMessageOwned::TemplateDistribution(
                    TemplateDistributionOwned::SetNewPrevHash(p),
                )) => {
                    sent.on_prev_hash(p.prev_hash.to_array());
                    shared.apply(|core| core.on_set_new_prev_hash(p));
                }
                Incoming::Sv2(other) => {
                    debug!("ignoring {} from the template provider", message_name(&other));
                }
                Incoming::Ehash(m) => {
                    debug!("ignoring {} from the template provider", m.name());
                }
            },
        }
    }
}

async fn send_solution(
    conn: &mut Sv2Connection,
    solution: SubmitSolutionOwned,
) -> Result<(), String> {
    conn.send(AnyMessageOwned::TemplateDistribution(
        TemplateDistributionOwned::SubmitSolution(solution),
    ))
    .await
    .map_err(|e| e.to_string())
}

/// A template's transactions, for the job declarator.
fn template_transactions(shared: &Shared, data: RequestTransactionDataSuccessOwned) {
    let transactions = match sv2::template_transactions(&data) {
        Ok(transactions) => transactions,
        Err(e) => {
            warn!("the template provider sent a bad transaction list: {e}");
            return;
        }
    };
    debug!(
        template_id = data.template_id,
        transactions = transactions.len(),
        "template transactions"
    );
    let listed = transactions.iter().map(Listed::of).collect();
    shared.with_jds(|jds| jds.on_transactions(listed));
}
