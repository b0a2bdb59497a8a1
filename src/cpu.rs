//! CPU-bound work off the async runtime: the pool that bounds it to the cores, and the session
//! context it carries onto blocking threads.
//!
//! `SESSION` is a task-local scoped around each task a session spawns; `spawn_blocking` would
//! lose it (and the tracing span), so CPU work goes through [`CpuPool::run`], which re-enters
//! both on the blocking thread. A leaf: it knows sessions by id and nothing of agents or the
//! orchestrator, which both use it.

use std::any::Any;
use std::sync::Arc;

use tokio::sync::oneshot;
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
///
/// A free slot goes to the waiting job of the oldest session (session ids are time-ordered),
/// not to the job that has waited longest. With more sessions than slots, first come first
/// served interleaves every session's agents, so all of them hold their decoded images between
/// agents and all of them near the deadline together; oldest first finishes the sessions that
/// started first, and a newer session waits until the older ones are through. Jobs outside a
/// session come first.
#[derive(Clone)]
pub struct CpuPool {
    slots: Arc<Slots>,
    size: usize,
}

/// The slots, and the jobs waiting for one, by session then arrival.
struct Slots {
    state: std::sync::Mutex<SlotState>,
}

struct SlotState {
    free: usize,
    /// Never holds a waiter while `free > 0`: a freed slot goes to a waiter if there is one.
    waiting: std::collections::BTreeMap<(Option<SessionId>, u64), oneshot::Sender<Slot>>,
    arrivals: u64,
}

/// A held slot; dropping it gives it to the next waiter, or back to the pool.
struct Slot {
    slots: Option<Arc<Slots>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.release();
        }
    }
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn acquire(self: &Arc<Self>, session: Option<SessionId>) -> Slot {
        let granted = {
            let mut state = self.lock();
            if state.free > 0 {
                state.free -= 1;
                return Slot {
                    slots: Some(Arc::clone(self)),
                };
            }
            let (grant, granted) = oneshot::channel();
            state.arrivals += 1;
            let arrival = state.arrivals;
            state.waiting.insert((session, arrival), grant);
            granted
        };
        // A waiter that gives up drops its receiver; a slot sent to it meanwhile is dropped
        // with the channel and passed on by its own `Drop`.
        granted
            .await
            .expect("a waiter's sender is only consumed by sending it a slot")
    }

    /// Hands a freed slot to the first waiter still waiting, or back to the pool.
    fn release(self: &Arc<Self>) {
        let mut state = self.lock();
        while let Some((_, grant)) = state.waiting.pop_first() {
            let slot = Slot {
                slots: Some(Arc::clone(self)),
            };
            match grant.send(slot) {
                Ok(()) => return,
                // That waiter gave up: this slot is still the one being released.
                Err(mut unsent) => unsent.slots = None,
            }
        }
        state.free += 1;
    }
}

impl CpuPool {
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        Self {
            slots: Arc::new(Slots {
                state: std::sync::Mutex::new(SlotState {
                    free: size,
                    waiting: std::collections::BTreeMap::new(),
                    arrivals: 0,
                }),
            }),
            size,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Slots in use right now.
    pub fn busy(&self) -> usize {
        self.size - self.slots.lock().free
    }

    /// Jobs waiting for a slot (some of which may have given up since).
    pub fn waiting(&self) -> usize {
        self.slots.lock().waiting.len()
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
        let session = SessionContext::current().map(|ctx| ctx.session_id);
        let slot = self
            .slots
            .acquire(session)
            .instrument(tracing::trace_span!("cpu_slot_wait"))
            .await;
        metrics::histogram!("kyc_cpu_slot_wait_seconds").record(queued.elapsed().as_secs_f64());
        if cancel.is_cancelled() {
            return Err(CpuError::Cancelled);
        }
        spawn_blocking_in_session(move || {
            let _slot = slot;
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
    async fn a_free_slot_goes_to_the_oldest_session_and_a_waiter_that_gave_up_loses_nothing() {
        let pool = CpuPool::new(1);
        let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(CancellationToken::new(), move |_| release_rx.recv())
                    .await
            }
        });
        while pool.busy() == 0 {
            tokio::task::yield_now().await;
        }
        let older: SessionId = "01a1ffba-9973-76c3-9344-15a4a723fd1a".parse().unwrap();
        let newer: SessionId = "01a1ffbb-0000-76c3-9344-15a4a723fd1a".parse().unwrap();
        let job = |session: SessionId, name: &'static str| {
            let (pool, ran) = (pool.clone(), Arc::clone(&ran));
            tokio::spawn(
                SessionContext {
                    session_id: session,
                }
                .scope(async move {
                    pool.run(CancellationToken::new(), move |_| {
                        ran.lock().unwrap().push(name)
                    })
                    .await
                }),
            )
        };
        // The newer session's job queues first, then one that gives up, then the older one's.
        let newer_job = job(newer, "newer");
        while pool.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        let gave_up = job(older, "gave up");
        while pool.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        gave_up.abort();
        assert!(gave_up.await.unwrap_err().is_cancelled());
        let older_job = job(older, "older");
        while pool.waiting() < 3 {
            tokio::task::yield_now().await;
        }

        release_tx.send(()).unwrap();
        holder.await.unwrap().unwrap().unwrap();
        older_job.await.unwrap().unwrap();
        newer_job.await.unwrap().unwrap();

        assert_eq!(*ran.lock().unwrap(), ["older", "newer"]);
        assert_eq!(pool.busy(), 0, "every slot is back");
        assert_eq!(pool.waiting(), 0);
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
