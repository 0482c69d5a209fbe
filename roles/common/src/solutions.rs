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
pub struct SentSolutions(VecDeque<SubmitSolutionOwned>);

impl SentSolutions {
    /// `solution` is being sent (kept once however often it is).
    pub fn sent(&mut self, solution: &SubmitSolutionOwned) {
        if self.0.contains(solution) {
            return;
        }
        self.0.push_back(solution.clone());
        if self.0.len() > KEPT {
            self.0.pop_front();
        }
    }

    /// The template provider moved the tip (a SetNewPrevHash): the
    /// solutions sent before are in its chain or stale.
    pub fn tip_moved(&mut self) {
        self.0.clear();
    }

    /// What a new link to the template provider sends again, oldest first.
    pub fn to_resend(&self) -> Vec<SubmitSolutionOwned> {
        self.0.iter().cloned().collect()
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
        sent.sent(&solution(1));
        sent.sent(&solution(2));
        assert_eq!(ids(&sent), [1, 2]);
        assert_eq!(ids(&sent), [1, 2], "again on every new link");
        sent.sent(&solution(1));
        assert_eq!(ids(&sent), [1, 2], "sent again, kept once");
        sent.tip_moved();
        assert!(ids(&sent).is_empty());
        for id in 0..(KEPT as u64 + 3) {
            sent.sent(&solution(id));
        }
        assert_eq!(ids(&sent), (3..KEPT as u64 + 3).collect::<Vec<_>>());
    }
}
