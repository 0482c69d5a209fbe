//! The shares being quoted now. The pool asks again what is unanswered, so
//! two copies of one share can be in the mint at once: the second waits
//! until the first is done (its quote written, or refused) and then finds
//! that quote, rather than be checked meanwhile and refused for what
//! changed since the first was checked (a new tip) while the first one's
//! quote is still being written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The shares being quoted now, by hash; each entry closes when its
/// quoting ends.
#[derive(Default)]
pub struct QuotingNow(Mutex<HashMap<[u8; 32], watch::Receiver<()>>>);

/// Whose turn it is to quote a share.
pub enum Turn {
    /// This copy's, until the mark drops.
    Mine(QuotingMark),
    /// Another copy's: closes once that one is done.
    Wait(watch::Receiver<()>),
}

impl QuotingNow {
    pub fn start(this: &Arc<Self>, share_hash: [u8; 32]) -> Turn {
        let mut quoting = roles_common::lock(&this.0);
        if let Some(done) = quoting.get(&share_hash) {
            return Turn::Wait(done.clone());
        }
        let (done, waiting) = watch::channel(());
        quoting.insert(share_hash, waiting);
        Turn::Mine(QuotingMark {
            quoting: this.clone(),
            share_hash,
            _done: done,
        })
    }
}

/// A share being quoted; owned, so it goes with the share to the quote
/// writer and is dropped once its quote is written, even if whoever asked
/// stopped waiting for the answer.
pub struct QuotingMark {
    quoting: Arc<QuotingNow>,
    share_hash: [u8; 32],
    /// Dropped after the entry is gone: the copies waiting take their turn.
    _done: watch::Sender<()>,
}

impl Drop for QuotingMark {
    fn drop(&mut self) {
        roles_common::lock(&self.quoting.0).remove(&self.share_hash);
    }
}

impl std::fmt::Debug for QuotingMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuotingMark({})", hex::encode(self.share_hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy of a share being quoted waits for the first to be done, then
    /// takes its own turn (and finds the first one's quote).
    #[tokio::test]
    async fn a_copy_of_a_share_being_quoted_waits_for_the_first() {
        let quoting = Arc::new(QuotingNow::default());
        let Turn::Mine(first) = QuotingNow::start(&quoting, [1; 32]) else {
            panic!("the first copy quotes")
        };
        assert!(
            matches!(QuotingNow::start(&quoting, [2; 32]), Turn::Mine(_)),
            "another share"
        );
        let Turn::Wait(mut done) = QuotingNow::start(&quoting, [1; 32]) else {
            panic!("a copy waits")
        };
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), done.changed());
        assert!(waited.await.is_err(), "still quoting");
        drop(first);
        assert!(done.changed().await.is_err(), "done");
        assert!(matches!(
            QuotingNow::start(&quoting, [1; 32]),
            Turn::Mine(_)
        ));
    }
}
