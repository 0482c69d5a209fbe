//! Block solutions sent to a template provider, kept until it moves the
//! tip. Nothing acknowledges a SubmitSolution, and a write that went
//! through can still die with its connection, so every new link to the
//! template provider gets them again; one it already has is refused there
//! as stale, one it lost becomes a block.

use std::collections::VecDeque;

use stratum_apps::stratum_core::template_distribution_sv2::SubmitSolutionOwned;

/// Solutions kept at most: every one is on the same tip, and the first the
/// template provider takes moves it.
const KEPT: usize = 16;

/// The solutions sent since the template provider last moved the tip.
#[derive(Debug, Default)]
pub struct SentSolutions {
    sent: VecDeque<SubmitSolutionOwned>,
    /// The prev hash of the last SetNewPrevHash seen.
    tip: Option<[u8; 32]>,
}

impl SentSolutions {
    /// `solution` is being sent (kept once however often it is).
    pub fn sent(&mut self, solution: &SubmitSolutionOwned) {
        if self.sent.contains(solution) {
            return;
        }
        self.sent.push_back(solution.clone());
        if self.sent.len() > KEPT {
            self.sent.pop_front();
        }
    }

    /// A SetNewPrevHash on `prev_hash`. Only a new tip drops the solutions
    /// (they are in the provider's chain, or stale): every new link starts
    /// with the current tip again, which may be the one they were found on.
    pub fn on_prev_hash(&mut self, prev_hash: [u8; 32]) {
        if self.tip.is_some_and(|tip| tip != prev_hash) {
            self.sent.clear();
        }
        self.tip = Some(prev_hash);
    }

    /// What a new link to the template provider sends again, oldest first.
    pub fn to_resend(&self) -> Vec<SubmitSolutionOwned> {
        self.sent.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solution(template_id: u64) -> SubmitSolutionOwned {
        SubmitSolutionOwned {
            template_id,
            version: 0,
            header_timestamp: 0,
            header_nonce: 0,
            coinbase_tx: vec![1, 2, 3].try_into().unwrap(),
        }
    }

    fn ids(sent: &SentSolutions) -> Vec<u64> {
        sent.to_resend().iter().map(|s| s.template_id).collect()
    }

    #[test]
    fn solutions_are_sent_again_until_the_tip_moves_and_the_oldest_go_first() {
        let mut sent = SentSolutions::default();
        sent.on_prev_hash([1; 32]);
        sent.sent(&solution(1));
        sent.sent(&solution(2));
        assert_eq!(ids(&sent), [1, 2]);
        assert_eq!(ids(&sent), [1, 2], "again on every new link");
        sent.sent(&solution(1));
        assert_eq!(ids(&sent), [1, 2], "sent again, kept once");
        // A new link starts with the same tip: they stay.
        sent.on_prev_hash([1; 32]);
        assert_eq!(ids(&sent), [1, 2]);
        sent.on_prev_hash([2; 32]);
        assert!(ids(&sent).is_empty());
        for id in 0..(KEPT as u64 + 3) {
            sent.sent(&solution(id));
        }
        assert_eq!(ids(&sent), (3..KEPT as u64 + 3).collect::<Vec<_>>());
    }
}
