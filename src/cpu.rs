//! CPU-bound work off the async runtime: the pool that bounds it to the cores, and the session
//! context it carries onto blocking threads.
//!
//! `SESSION` is a task-local scoped around each task a session spawns; `spawn_blocking` would
//! lose it (and the tracing span), so CPU work goes through [`CpuPool::run`], which re-enters
//! both on the blocking thread. A leaf: it knows sessions by id and nothing of agents or the
//! orchestrator, which both use it.

use std::any::Any;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::SessionId;

/// Why CPU work produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuError {
    /// The work panicked; the payload's message is kept for the log.
    #[error("the work panicked: {0}")]
    Panicked(String),
    /// Its token was cancelled before it started, or the runtime shut down under it.
    #[error("cancelled")]
    Cancelled,
}

/// Identity of the session a piece of work belongs to.
#[derive(Debug, Clone, Copy)]
pub struct SessionContext {
    pub session_id: SessionId,
}

tokio::task_local! {
    static SESSION: SessionContext;
}

impl SessionContext {
    /// The context of the task (or blocking job) this is called from, if it belongs to a session.
    pub fn current() -> Option<Self> {
        SESSION.try_with(|ctx| *ctx).ok()
    }

    /// Runs `future` with this context as its task-local.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        SESSION.scope(self, future).await
    }
}

/// Runs blocking work on tokio's blocking pool inside the caller's session context and span.
/// A panic in `work` comes back as `Err` with the panic's message, never as a lost task.
pub async fn spawn_blocking_in_session<F, R>(work: F) -> Result<R, CpuError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    let session = SessionContext::current();
    let handle = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        match session {
            Some(ctx) => SESSION.sync_scope(ctx, work),
            None => work(),
        }
    });
    match handle.await {
        Ok(value) => Ok(value),
        Err(err) if err.is_panic() => Err(CpuError::Panicked(panic_message(err.into_panic()))),
        Err(_) => Err(CpuError::Cancelled),
    }
}

/// The text of a panic payload (panics carry `&str` or `String`; anything else is unnamed).
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "unknown panic payload".to_owned(), |s| (*s).to_owned()),
    }
}

/// Bounds CPU-bound agent work to a number of slots (by default one per core), so that agents
/// queue for the cores instead of oversubscribing them, and the async runtime stays free.
#[derive(Clone)]
pub struct CpuPool {
    slots: Arc<Semaphore>,
    size: usize,
}

impl CpuPool {
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        Self {
            slots: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Slots in use right now.
    pub fn busy(&self) -> usize {
        self.size - self.slots.available_permits()
    }

    /// Waits for a slot (the wait counts against the caller's timeout), then runs `work` on a
    /// blocking thread. The slot is held by the job itself: if the caller stops waiting (timeout,
    /// cancellation) the job sees `cancel`, and its late result is dropped along with the slot.
    pub async fn run<F, R>(&self, cancel: CancellationToken, work: F) -> Result<R, CpuError>
    where
        F: FnOnce(&CancellationToken) -> R + Send + 'static,
        R: Send + 'static,
    {
        let queued = tokio::time::Instant::now();
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .instrument(tracing::trace_span!("cpu_slot_wait"))
            .await
            .expect("the CPU pool's semaphore is never closed");
        metrics::histogram!("kyc_cpu_slot_wait_seconds").record(queued.elapsed().as_secs_f64());
        if cancel.is_cancelled() {
            return Err(CpuError::Cancelled);
        }
        spawn_blocking_in_session(move || {
            let _slot = permit;
            yield_to_the_runtime();
            work(&cancel)
        })
        .await
    }
}

/// How much lower than the runtime's a CPU job's priority is: a thread that runs CPU jobs takes
/// its nice value up by this much (to 19 at most).
///
/// With CPU jobs keeping every core busy, the runtime's workers still have to answer `/health`,
/// accept connections and stream events within milliseconds. At the same priority the kernel
/// shares the cores evenly between them, and a worker that wakes for a request can wait a
/// scheduling slice behind a CPU job; at nice 10 a job weighs about a tenth of a worker, so the
/// workers run almost as soon as they wake, and the jobs still get every cycle the workers leave.
/// (README, Performance, has the measurements; `SCHED_IDLE` was rejected because a job under it
/// gets next to no CPU whenever the runtime is busy.)
pub const CPU_JOB_NICE: i32 = 10;

thread_local! {
    static NICED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lowers the calling blocking thread's priority by [`CPU_JOB_NICE`], once per thread.
///
/// An unprivileged thread cannot raise its priority again, so the thread keeps the lower one
/// for the rest of its life, also for the other blocking work tokio may later give it (request
/// bodies, input files and their fsync, fingerprints). That work then competes with the
/// runtime's workers as the CPU jobs do, and with CPU jobs as before; tokio retires idle
/// blocking threads after ten seconds, and new ones start at the runtime's priority. On Linux
/// the nice value belongs to the thread, not the process, so the runtime's workers keep theirs;
/// elsewhere nothing is changed.
fn yield_to_the_runtime() {
    if NICED.get() {
        return;
    }
    NICED.set(true);
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(thread)).unwrap_or(0);
        let lower = (current + CPU_JOB_NICE).min(19);
        if let Err(err) = rustix::process::setpriority_process(Some(thread), lower) {
            tracing::warn!(error = %err, "could not lower a CPU thread's priority; CPU jobs compete with the runtime");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocking_work_sees_the_session_context() {
        let ctx = SessionContext {
            session_id: SessionId::new(),
        };
        let seen = ctx
            .scope(spawn_blocking_in_session(|| {
                SessionContext::current().map(|c| c.session_id)
            }))
            .await
            .unwrap();
        assert_eq!(seen, Some(ctx.session_id));
    }

    #[tokio::test]
    async fn a_panic_on_the_blocking_pool_is_reported_with_its_message() {
        let pool = CpuPool::new(1);
        let err = pool
            .run(CancellationToken::new(), |_| -> () { panic!("boom") })
            .await
            .unwrap_err();
        assert_eq!(err, CpuError::Panicked("boom".into()));
        assert_eq!(pool.busy(), 0, "the slot is released after a panic");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn cpu_jobs_run_below_the_runtimes_priority() {
        let this_thread =
            || rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let before = this_thread();
        let pool = CpuPool::new(1);
        let in_job = pool
            .run(CancellationToken::new(), move |_| this_thread())
            .await
            .unwrap();
        let expected = (before + CPU_JOB_NICE).min(19);
        assert_eq!(
            in_job, expected,
            "a CPU job's nice, the runtime's being {before}"
        );
        assert_eq!(
            this_thread(),
            before,
            "the runtime's thread keeps its priority"
        );
    }

    #[tokio::test]
    async fn an_abandoned_job_releases_its_slot_when_it_sees_the_cancellation() {
        let pool = CpuPool::new(1);
        let cancel = CancellationToken::new();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let job = tokio::spawn({
            let pool = pool.clone();
            let cancel = cancel.clone();
            async move {
                pool.run(cancel, move |cancel| {
                    started_tx.send(()).unwrap();
                    while !cancel.is_cancelled() {
                        std::hint::spin_loop();
                    }
                })
                .await
            }
        });
        started_rx.await.unwrap();
        assert_eq!(pool.busy(), 1);
        job.abort();
        cancel.cancel();
        // The next job can only start once the abandoned one has given its slot back.
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            pool.run(CancellationToken::new(), |_| 7),
        )
        .await
        .expect("the abandoned job released its slot");
        assert_eq!(next.unwrap(), 7);
    }
}
