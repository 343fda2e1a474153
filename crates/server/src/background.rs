//! Hearth's background loops: the dispatcher, the usage sampler and the machine meter,
//! the engine reaper, the heartbeat flush, the port guard's check, the in-process node and
//! the listeners (API, gateway, cluster port). All are started one way ([`Background::spawn`],
//! each handed the same stop signal) and stopped by one rule ([`Background::stop`]): the
//! signal is given, each loop returns at its next turn, and whatever has not returned by a
//! common deadline is aborted and named in the log.

use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The stop signal a loop is handed.
pub type Stop = watch::Receiver<bool>;

/// Resolves once the stop signal is given (or nobody can give it any more).
pub async fn stopped(stop: &mut Stop) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// The running loops.
pub struct Background {
    signal: watch::Sender<bool>,
    loops: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Background {
    fn default() -> Self {
        Background {
            signal: watch::channel(false).0,
            loops: Vec::new(),
        }
    }
}

impl Background {
    /// Starts a loop, named for the log, with the stop signal.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, start: F)
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let task = tokio::spawn(start(self.signal.subscribe()));
        self.loops.push((name, task));
    }

    /// Gives the stop signal and waits until every loop returned, `within` at most; a loop
    /// still running then is aborted.
    pub async fn stop(self, within: Duration) {
        let _ = self.signal.send(true);
        let deadline = tokio::time::Instant::now() + within;
        for (name, mut task) in self.loops {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!("{name} did not stop within {}s: aborted", within.as_secs());
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_loop_sees_the_signal_and_a_stuck_one_is_aborted() {
        let mut bg = Background::default();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for name in ["one", "two"] {
            let done = done_tx.clone();
            bg.spawn(name, move |mut stop| async move {
                stopped(&mut stop).await;
                let _ = done.send(name);
            });
        }
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        bg.spawn("stuck", move |_stop| async move {
            let _keep = dropped_tx;
            std::future::pending::<()>().await;
        });
        let began = tokio::time::Instant::now();
        bg.stop(Duration::from_millis(200)).await;
        assert!(began.elapsed() < Duration::from_secs(2));
        let mut seen = vec![
            done_rx.recv().await.expect("one stopped"),
            done_rx.recv().await.expect("two stopped"),
        ];
        seen.sort();
        assert_eq!(seen, ["one", "two"]);
        // The stuck loop was aborted: what it held is dropped.
        assert!(dropped_rx.await.is_err());
    }

    #[tokio::test]
    async fn a_loop_started_after_the_signal_stops_at_once() {
        let (tx, rx) = watch::channel(false);
        tx.send(true).expect("send");
        let mut rx2 = rx.clone();
        tokio::time::timeout(Duration::from_secs(1), stopped(&mut rx2))
            .await
            .expect("stopped at once");
        drop(tx);
        let mut orphan = rx;
        tokio::time::timeout(Duration::from_secs(1), stopped(&mut orphan))
            .await
            .expect("no sender: stopped");
    }
}
