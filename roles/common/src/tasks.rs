//! A role's tasks. They run until the role's stop token is cancelled; one
//! that ends before (a panic, a loop that gave up) stops the others, and
//! the role ends with an error naming it: the process exits with a failure
//! a supervisor restarts, instead of running on without that task.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

pub struct RoleTasks {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
}

impl RoleTasks {
    /// Tasks that run until `stop` is cancelled. Give the role a token of
    /// its own (a child of the one it was given): a task ending early
    /// cancels it.
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            stop,
            tasks: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    /// Runs `task`, named `name` in the error if it ends early.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let id = self.tasks.spawn(task).id();
        self.names.insert(id, name);
    }

    /// Stops every task at once, as a crash would (tests).
    pub fn abort(mut self) {
        self.tasks.abort_all();
    }

    /// Waits until every task has ended. `Err` names the first that ended
    /// before the stop token was cancelled, or panicked (the others are
    /// then told to stop).
    pub async fn wait(mut self) -> Result<(), String> {
        let mut failure = None;
        while let Some(ended) = self.tasks.join_next_with_id().await {
            let (id, result) = match ended {
                Ok((id, ())) => (id, Ok(())),
                Err(e) => (e.id(), joined(Err::<(), _>(e))),
            };
            let name = self.names.get(&id).copied().unwrap_or("a task");
            let reason = match result {
                Err(e) => format!("{name} {e}"),
                Ok(()) if self.stop.is_cancelled() => continue,
                Ok(()) => format!("{name} ended on its own"),
            };
            tracing::error!("{reason}: stopping");
            failure.get_or_insert(reason);
            self.stop.cancel();
        }
        failure.map_or(Ok(()), Err)
    }
}

/// How a task ended: a panic is an error with its message.
pub fn joined<T>(result: Result<T, JoinError>) -> Result<T, String> {
    result.map_err(|e| match e.try_into_panic() {
        Ok(panic) => format!("panicked: {}", panic_message(&*panic)),
        Err(e) => e.to_string(),
    })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(message), _) => message,
        (_, Some(message)) => message,
        _ => "(no message)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(10);

    fn until_stopped(stop: &CancellationToken) -> impl Future<Output = ()> + Send + 'static {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    }

    #[tokio::test]
    async fn tasks_stopped_together_end_well() {
        let stop = CancellationToken::new();
        let mut tasks = RoleTasks::new(stop.clone());
        tasks.spawn("listener", until_stopped(&stop));
        tasks.spawn("timer", until_stopped(&stop));
        stop.cancel();
        assert_eq!(tokio::time::timeout(WAIT, tasks.wait()).await, Ok(Ok(())));
    }

    #[tokio::test]
    async fn a_task_that_panics_stops_the_others_and_is_named() {
        let stop = CancellationToken::new();
        let mut tasks = RoleTasks::new(stop.clone());
        tasks.spawn("listener", until_stopped(&stop));
        tasks.spawn("flow", async { panic!("bad state") });
        let ended = tokio::time::timeout(WAIT, tasks.wait()).await.unwrap();
        assert_eq!(ended, Err("flow panicked: bad state".to_string()));
        assert!(stop.is_cancelled());
    }

    #[tokio::test]
    async fn a_task_that_returns_before_the_stop_is_an_error() {
        let stop = CancellationToken::new();
        let mut tasks = RoleTasks::new(stop.clone());
        tasks.spawn("listener", until_stopped(&stop));
        tasks.spawn("link", async {});
        let ended = tokio::time::timeout(WAIT, tasks.wait()).await.unwrap();
        assert_eq!(ended, Err("link ended on its own".to_string()));
    }
}
