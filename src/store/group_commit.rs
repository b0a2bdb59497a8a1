//! Group commit: many writers, one transaction per batch.
//!
//! Every write is queued to one writer task and acknowledged when the transaction holding it has
//! committed. While one batch commits, the next one gathers, so under load a commit carries
//! hundreds of writes and alone it carries one, without waiting: `linger` (`store.flush_interval_us`)
//! can make the writer wait a little longer for company, trading latency for fewer commits.
//!
//! A batch that fails for a reason other than the database being unreachable is retried one
//! write at a time, so one bad write fails alone.
//!
//! There may be several writers, each with a connection of its own (PostgreSQL's
//! `store.writer_connections`): whichever is free gathers the next batch from the one queue
//! while the others commit. Batches on different connections commit in any order, which
//! reorders no session's writes: a session never has two writes queued at once (its insert is
//! acknowledged before its first events are queued, each event write before the next, and the
//! last before its completion).
//!
//! A commit that takes longer than `timeout` (`store.write_timeout_ms`) counts as the store
//! being unavailable: a connection the network left half-open would otherwise hold every write
//! behind it until TCP gives up, minutes later. Whether such a write landed is unknown; the
//! orchestrator's retry reads the store before it writes again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{StoreError, answered_within};
use crate::telemetry::ErrorChain;

/// Writes one batch in one transaction.
#[async_trait]
pub(crate) trait BatchWriter<W>: Send + 'static {
    async fn write_batch(&mut self, batch: &[W]) -> Result<(), StoreError>;
}

struct Queued<W> {
    write: W,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The queue in front of the writer task. Dropping every clone ends the task.
pub(crate) struct GroupCommit<W> {
    queue: mpsc::Sender<Queued<W>>,
}

impl<W> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<W: Send + Sync + 'static> GroupCommit<W> {
    /// Starts a task for each writer on the current runtime, all taking from one queue.
    pub(crate) fn spawn<B: BatchWriter<W>>(
        writers: impl IntoIterator<Item = B>,
        max_batch: usize,
        linger: Duration,
        timeout: Duration,
        queue: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let limits = Limits {
            max_batch: max_batch.max(1),
            linger,
            timeout,
        };
        for writer in writers {
            tokio::spawn(run(writer, Arc::clone(&rx), limits));
        }
        Self { queue: tx }
    }

    /// Queues a write and waits until it is committed.
    pub(crate) async fn submit(&self, write: W) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send(Queued { write, done })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        committed.await.map_err(|_| StoreError::WriterStopped)?
    }
}

#[derive(Clone, Copy)]
struct Limits {
    max_batch: usize,
    linger: Duration,
    timeout: Duration,
}

/// One write of `batch`, or `TimedOut` once it has taken longer than `timeout`.
async fn write_within<W>(
    writer: &mut impl BatchWriter<W>,
    batch: &[W],
    timeout: Duration,
) -> Result<(), StoreError> {
    answered_within(timeout, "a commit", writer.write_batch(batch)).await
}

/// Waits for the next batch, up to `max_batch` writes: what is queued, and with a `linger` what
/// arrives within it. Empty once every sender is gone.
async fn gather<W>(
    queue: &Mutex<mpsc::Receiver<Queued<W>>>,
    batch: &mut Vec<Queued<W>>,
    Limits {
        max_batch, linger, ..
    }: Limits,
) {
    // Held while gathering only: the next free writer gathers while this one commits.
    let mut queue = queue.lock().await;
    if queue.recv_many(batch, max_batch).await == 0 {
        return;
    }
    if !linger.is_zero() && batch.len() < max_batch {
        let until = tokio::time::Instant::now() + linger;
        while batch.len() < max_batch {
            match tokio::time::timeout_at(until, queue.recv()).await {
                Ok(Some(queued)) => batch.push(queued),
                _ => break,
            }
        }
    }
}

async fn run<W: Send + Sync>(
    mut writer: impl BatchWriter<W>,
    queue: Arc<Mutex<mpsc::Receiver<Queued<W>>>>,
    limits: Limits,
) {
    let Limits {
        max_batch, timeout, ..
    } = limits;
    let mut batch: Vec<Queued<W>> = Vec::with_capacity(max_batch);
    loop {
        gather(&queue, &mut batch, limits).await;
        if batch.is_empty() {
            return;
        }
        let writes: Vec<W> = Vec::with_capacity(batch.len());
        let (writes, acks) = batch.drain(..).fold(
            (writes, Vec::with_capacity(max_batch)),
            |(mut writes, mut acks), queued| {
                writes.push(queued.write);
                acks.push(queued.done);
                (writes, acks)
            },
        );
        let started = Instant::now();
        let result = write_within(&mut writer, &writes, timeout).await;
        metrics::histogram!("kyc_store_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("kyc_store_batch_writes").record(writes.len() as f64);
        match result {
            Ok(()) => {
                for ack in acks {
                    let _ = ack.send(Ok(()));
                }
            }
            Err(error) if error.is_unavailable() => {
                tracing::warn!(
                    error = %ErrorChain(&error),
                    writes = writes.len(),
                    "store batch failed"
                );
                let error = Arc::new(error);
                for ack in acks {
                    let _ = ack.send(Err(StoreError::Shared(Arc::clone(&error))));
                }
            }
            Err(error) if writes.len() == 1 => {
                if let Some(ack) = acks.into_iter().next() {
                    let _ = ack.send(Err(error));
                }
            }
            Err(error) => {
                tracing::debug!(
                    error = %ErrorChain(&error),
                    "store batch failed; writing its writes one by one"
                );
                // Once the store stops answering, the rest fail at once rather than each
                // waiting out its own timeout.
                let mut gone: Option<Arc<StoreError>> = None;
                for (write, ack) in writes.iter().zip(acks) {
                    let result = match &gone {
                        Some(error) => Err(StoreError::Shared(Arc::clone(error))),
                        None => {
                            match write_within(&mut writer, std::slice::from_ref(write), timeout)
                                .await
                            {
                                Err(error) if error.is_unavailable() => {
                                    let error = Arc::new(error);
                                    gone = Some(Arc::clone(&error));
                                    Err(StoreError::Shared(error))
                                }
                                result => result,
                            }
                        }
                    };
                    let _ = ack.send(result);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records each batch; a write of 13 is refused.
    struct Recorder(Arc<Mutex<Vec<Vec<u32>>>>);

    #[async_trait]
    impl BatchWriter<u32> for Recorder {
        async fn write_batch(&mut self, batch: &[u32]) -> Result<(), StoreError> {
            if batch.contains(&13) {
                return Err(StoreError::corrupt("13"));
            }
            self.0.lock().unwrap().push(batch.to_vec());
            Ok(())
        }
    }

    #[tokio::test]
    async fn writes_queued_together_commit_together_and_a_bad_one_fails_alone() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let commit = GroupCommit::spawn(
            [Recorder(Arc::clone(&batches))],
            100,
            Duration::ZERO,
            Duration::from_secs(60),
            100,
        );
        // Each group is queued whole before the writer task next runs: this test's runtime has
        // one thread.
        let submit_all = |writes: Vec<u32>| {
            futures::future::join_all(writes.into_iter().map(|n| {
                let commit = commit.clone();
                async move { commit.submit(n).await }
            }))
        };

        let first = submit_all((1..=5).collect()).await;
        assert!(first.iter().all(Result::is_ok), "{first:?}");
        let second = submit_all(vec![12, 13, 14]).await;
        assert!(second[0].is_ok() && second[2].is_ok(), "{second:?}");
        assert!(matches!(second[1], Err(StoreError::Corrupt { .. })));

        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches, [vec![1, 2, 3, 4, 5], vec![12], vec![14]]);
    }

    /// A commit that never answers, as on a connection the network left half-open.
    struct Hangs;

    #[async_trait]
    impl BatchWriter<u32> for Hangs {
        async fn write_batch(&mut self, _: &[u32]) -> Result<(), StoreError> {
            std::future::pending().await
        }
    }

    /// Refuses any batch of more than one write, then stops answering.
    struct RefusesThenHangs;

    #[async_trait]
    impl BatchWriter<u32> for RefusesThenHangs {
        async fn write_batch(&mut self, batch: &[u32]) -> Result<(), StoreError> {
            if batch.len() > 1 {
                return Err(StoreError::corrupt("refused"));
            }
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn writes_retried_one_by_one_stop_waiting_once_the_store_stops_answering() {
        let timeout = Duration::from_secs(10);
        let commit = GroupCommit::spawn([RefusesThenHangs], 100, Duration::ZERO, timeout, 100);
        let started = tokio::time::Instant::now();

        let results = futures::future::join_all((1..=3).map(|n| {
            let commit = commit.clone();
            async move { commit.submit(n).await }
        }))
        .await;

        assert!(
            results
                .iter()
                .all(|result| result.as_ref().is_err_and(StoreError::is_unavailable)),
            "{results:?}"
        );
        assert_eq!(started.elapsed(), timeout, "one timeout, not one per write");
    }

    /// Writers in `write_batch` now, and whether two ever were at once.
    #[derive(Default)]
    struct Overlap {
        inside: usize,
        met: bool,
    }

    /// Commits only once another writer is committing at the same time.
    struct Together(Arc<tokio::sync::watch::Sender<Overlap>>);

    /// Leaves `write_batch`, whether it returned or was dropped at its time limit.
    struct Leaving(Arc<tokio::sync::watch::Sender<Overlap>>);

    impl Drop for Leaving {
        fn drop(&mut self) {
            self.0.send_modify(|overlap| overlap.inside -= 1);
        }
    }

    #[async_trait]
    impl BatchWriter<u32> for Together {
        async fn write_batch(&mut self, _: &[u32]) -> Result<(), StoreError> {
            self.0.send_modify(|overlap| {
                overlap.inside += 1;
                overlap.met |= overlap.inside > 1;
            });
            let _leaving = Leaving(Arc::clone(&self.0));
            let mut overlap = self.0.subscribe();
            let _ = overlap.wait_for(|overlap| overlap.met).await;
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn several_writers_commit_batches_at_the_same_time() {
        let overlap = Arc::new(tokio::sync::watch::Sender::new(Overlap::default()));
        let writers = [Together(Arc::clone(&overlap)), Together(overlap)];
        // One write a batch: each writer takes one, and neither commits until both do.
        let commit = GroupCommit::spawn(writers, 1, Duration::ZERO, Duration::from_secs(10), 8);
        let both = futures::future::join(commit.submit(1), commit.submit(2));
        let (first, second) = tokio::time::timeout(Duration::from_secs(5), both)
            .await
            .expect("the second batch commits while the first waits");
        assert!(first.is_ok() && second.is_ok(), "{first:?} {second:?}");

        // Alone, a writer waits for a second committer that never comes.
        let lone = GroupCommit::spawn(
            [Together(Arc::new(tokio::sync::watch::Sender::new(
                Overlap::default(),
            )))],
            1,
            Duration::ZERO,
            Duration::from_secs(10),
            8,
        );
        let both = futures::future::join(lone.submit(1), lone.submit(2));
        let (first, second) = both.await;
        assert!(
            timed_out(&first) && timed_out(&second),
            "{first:?} {second:?}"
        );
    }

    /// A write failed by its time limit, which the writer hands out shared.
    fn timed_out(result: &Result<(), StoreError>) -> bool {
        match result {
            Err(StoreError::Shared(error)) => matches!(**error, StoreError::TimedOut { .. }),
            _ => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_that_does_not_answer_fails_as_unavailable_after_the_timeout() {
        let timeout = Duration::from_secs(10);
        let commit = GroupCommit::spawn([Hangs], 100, Duration::ZERO, timeout, 100);
        let started = tokio::time::Instant::now();

        let first = commit.submit(1).await;
        assert!(timed_out(&first), "{first:?}");
        assert_eq!(started.elapsed(), timeout);
        // The writer is not stuck behind it: the next write gets its own answer.
        let second = commit.submit(2).await;
        assert!(timed_out(&second), "{second:?}");
        assert_eq!(started.elapsed(), timeout * 2);
    }
}
