//! Live followers: one broadcast channel per running session, and the stream a follower reads.
//!
//! A follower subscribes first, then replays the store, then reads live events, dropping any it
//! has already sent (by `seq`). A broadcast channel never waits for its receivers, so a slow
//! reader cannot slow a session down; if one falls so far behind that the channel overwrites
//! events it has not read, it catches up from the store.
//!
//! A session running on another instance has no channel here: its follower reads the store
//! every `store.poll_interval_ms` instead (polling works the same on every backend; PostgreSQL's
//! LISTEN/NOTIFY would save the interval's latency at the cost of a connection per instance
//! held open for it).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::broadcast;

use crate::domain::SessionId;
use crate::store::{EventRecord, SessionStatus, SessionStore, StoreError};
use crate::telemetry::ErrorChain;

/// Events buffered per session for live followers. A session of the default plan has about a
/// dozen, so a follower that keeps up never lags; one that falls further behind catches up from
/// the store. Every slot is allocated when the session opens, for each session in flight.
const LIVE_CAPACITY: usize = 16;

/// The live channels of the sessions running in this process.
#[derive(Default)]
pub(crate) struct Hub {
    // A std Mutex: held only to insert, look up or remove, never across an await.
    channels: Mutex<HashMap<SessionId, broadcast::Sender<EventRecord>>>,
}

impl Hub {
    pub(crate) fn open(&self, id: SessionId) -> broadcast::Sender<EventRecord> {
        let (sender, _) = broadcast::channel(LIVE_CAPACITY);
        self.lock().insert(id, sender.clone());
        sender
    }

    pub(crate) fn close(&self, id: SessionId) {
        self.lock().remove(&id);
    }

    pub(crate) fn subscribe(&self, id: SessionId) -> Option<broadcast::Receiver<EventRecord>> {
        self.lock().get(&id).map(broadcast::Sender::subscribe)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SessionId, broadcast::Sender<EventRecord>>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Follow {
    store: Arc<dyn SessionStore>,
    id: SessionId,
    last: u64,
    live: Option<broadcast::Receiver<EventRecord>>,
    poll_interval: Duration,
    pending: VecDeque<EventRecord>,
    done: bool,
    /// The store must be read before the live channel: its history is unread, or the channel
    /// lagged or closed. A store that does not answer is asked again, never the end of the
    /// stream: the session goes on, and its follower with it.
    behind: bool,
}

impl Follow {
    async fn catch_up(&mut self) -> Result<(), StoreError> {
        let events = self.store.events_after(self.id, self.last).await?;
        self.pending.extend(events.unwrap_or_default());
        Ok(())
    }

    /// Reads the store once; `true` when the session has completed and nothing newer is left.
    async fn poll(&mut self) -> Result<bool, StoreError> {
        let completed = self
            .store
            .get(self.id)
            .await?
            .is_none_or(|s| s.status == SessionStatus::Completed);
        self.catch_up().await?;
        if self.pending.is_empty() {
            if completed {
                return Ok(true);
            }
            tokio::time::sleep(self.poll_interval).await;
        }
        Ok(false)
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            while let Some(event) = self.pending.pop_front() {
                if event.seq <= self.last {
                    continue;
                }
                self.last = event.seq;
                // A review's events come after the terminal one: those already read are sent
                // too, then the stream ends.
                self.done |= event.terminal;
                return Some(event.line);
            }
            if self.done {
                return None;
            }
            if self.behind && self.live.is_some() {
                match self.catch_up().await {
                    Ok(()) => self.behind = false,
                    Err(error) => {
                        tracing::warn!(error = %ErrorChain(&error), "could not read session events; retrying");
                        tokio::time::sleep(self.poll_interval).await;
                    }
                }
                continue;
            }
            let Some(live) = self.live.as_mut() else {
                // Not running here (any more): whoever runs it writes to the store. The status
                // is read before the events: a session completed by then has its terminal event
                // stored (they are written together), so if it is not among the events read,
                // it was at or before `after` and the stream is complete.
                match self.poll().await {
                    Ok(true) => return None,
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(error = %ErrorChain(&error), "could not read session events; retrying");
                        tokio::time::sleep(self.poll_interval).await;
                    }
                }
                continue;
            };
            match live.recv().await {
                Ok(event) => self.pending.push_back(event),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "live follower lagged; catching up from the store");
                    self.behind = true;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.live = None;
                    self.behind = true;
                }
            }
        }
    }
}

/// The NDJSON lines of a session this instance has just started, from its first event: `live`
/// was subscribed before the session could publish anything, so the store is read only if the
/// follower falls behind (and read again until it answers, so that a store failing at that
/// moment does not turn an accepted session into an error for its client).
pub(crate) fn follow_new(
    store: Arc<dyn SessionStore>,
    id: SessionId,
    live: broadcast::Receiver<EventRecord>,
    poll_interval: Duration,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let state = Follow {
        store,
        id,
        last: 0,
        live: Some(live),
        poll_interval,
        pending: VecDeque::new(),
        done: false,
        behind: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        state.next().await.map(|line| (line, state))
    })
}

/// The NDJSON lines of a session after `after`: the stored history, then live events until
/// `session.completed`. `None` when the session is unknown.
pub(crate) async fn follow(
    hub: &Hub,
    store: Arc<dyn SessionStore>,
    id: SessionId,
    after: u64,
    poll_interval: Duration,
) -> Result<Option<impl Stream<Item = Bytes> + Send + 'static>, StoreError> {
    let live = hub.subscribe(id);
    let Some(history) = store.events_after(id, after).await? else {
        return Ok(None);
    };
    let state = Follow {
        store,
        id,
        last: after,
        live,
        poll_interval,
        pending: history.into(),
        done: false,
        behind: false,
    };
    Ok(Some(futures::stream::unfold(
        state,
        |mut state| async move { state.next().await.map(|line| (line, state)) },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::store::fixtures::{
        ReplayGate, TestStore, approved, closing, event as line, running,
    };
    use futures::StreamExt;

    const POLL: Duration = Duration::from_millis(10);

    #[tokio::test]
    async fn a_follower_overrun_by_the_live_channel_catches_up_from_the_store() {
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new(10));
        let hub = Hub::default();
        let id = SessionId::new();
        store.insert(&running(id), None).await.unwrap();
        let live = hub.open(id);
        let follower = follow(&hub, Arc::clone(&store), id, 0, POLL)
            .await
            .unwrap()
            .expect("the session exists");

        // Three times what the channel holds, published before the follower reads anything.
        let last = 3 * LIVE_CAPACITY as u64;
        for seq in 1..last {
            store.append_events(id, &[line(seq, false)]).await.unwrap();
            live.send(line(seq, false)).unwrap();
        }
        store
            .complete(id, &approved(), &closing(last))
            .await
            .unwrap();
        live.send(line(last, true)).unwrap();

        let lines: Vec<Bytes> = follower.collect().await;

        let expected: Vec<Bytes> = (1..=last).map(|seq| line(seq, false).line).collect();
        assert_eq!(
            lines, expected,
            "every event once, in order, ending at the terminal one"
        );
    }

    /// A running session in a test store, its live channel and a subscription to it taken
    /// as `Orchestrator::start` takes one.
    async fn new_session() -> (
        Arc<TestStore>,
        Hub,
        SessionId,
        broadcast::Sender<EventRecord>,
        broadcast::Receiver<EventRecord>,
    ) {
        let store = Arc::new(TestStore::new());
        let hub = Hub::default();
        let id = SessionId::new();
        store.insert(&running(id), None).await.unwrap();
        let live = hub.open(id);
        let subscription = live.subscribe();
        (store, hub, id, live, subscription)
    }

    /// A new session's follower, collecting its lines in a task of its own.
    fn spawn_new_follower(
        store: &Arc<TestStore>,
        id: SessionId,
        subscription: broadcast::Receiver<EventRecord>,
    ) -> tokio::task::JoinHandle<Vec<Bytes>> {
        let store = Arc::clone(store) as Arc<dyn SessionStore>;
        tokio::spawn(follow_new(store, id, subscription, POLL).collect())
    }

    /// A new session's follower has its events from the subscription taken when the session
    /// opened, those published before the stream began too. Overrun, it catches up from the
    /// store, and a store that does not answer at first is asked again, never the stream's end.
    #[tokio::test(start_paused = true)]
    async fn a_new_sessions_follower_catches_up_from_a_store_that_does_not_answer_at_first() {
        let (store, _hub, id, live, subscription) = new_session().await;
        // Published before anyone follows, and more than the channel holds: the follower
        // lags and must read the store, which fails three reads first.
        let last = 3 * LIVE_CAPACITY as u64;
        for seq in 1..last {
            store.append_events(id, &[line(seq, false)]).await.unwrap();
            live.send(line(seq, false)).unwrap();
        }
        store
            .failing_reads
            .store(3, std::sync::atomic::Ordering::SeqCst);

        let follower = spawn_new_follower(&store, id, subscription);
        tokio::time::sleep(POLL * 5).await;
        store
            .complete(id, &approved(), &closing(last))
            .await
            .unwrap();
        live.send(line(last, true)).unwrap();

        let lines = tokio::time::timeout(std::time::Duration::from_secs(60), follower)
            .await
            .expect("the follower ended")
            .unwrap();
        let expected: Vec<Bytes> = (1..=last).map(|seq| line(seq, false).line).collect();
        assert_eq!(lines, expected);
        assert_eq!(
            store
                .failing_reads
                .load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the reads did fail first"
        );
    }

    /// Kept up with, a new session's follower never reads the store: every event comes from
    /// the subscription, the first ones (published before the stream began) included.
    #[tokio::test(start_paused = true)]
    async fn a_new_sessions_follower_that_keeps_up_reads_nothing_from_the_store() {
        let (store, hub, id, live, subscription) = new_session().await;
        live.send(line(1, false)).unwrap();
        // Every read fails: a follower that read the store would stall here until the timeout.
        store
            .failing_reads
            .store(usize::MAX, std::sync::atomic::Ordering::SeqCst);

        let follower = spawn_new_follower(&store, id, subscription);
        live.send(line(2, false)).unwrap();
        live.send(line(3, true)).unwrap();
        drop(live);
        hub.close(id);

        let lines = tokio::time::timeout(std::time::Duration::from_secs(60), follower)
            .await
            .expect("the follower ended without the store")
            .unwrap();
        let expected: Vec<Bytes> = (1..=3).map(|seq| line(seq, false).line).collect();
        assert_eq!(lines, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn events_published_while_the_history_is_read_still_reach_the_follower() {
        // The window in which a follower that subscribed only after reading would miss events.
        let store = Arc::new(TestStore {
            replay_gate: Some(ReplayGate::default()),
            ..TestStore::new()
        });
        let gate = store.replay_gate.as_ref().unwrap();
        let hub = Arc::new(Hub::default());
        let id = SessionId::new();
        store.insert(&running(id), None).await.unwrap();
        let live = hub.open(id);
        let follower = tokio::spawn({
            let (hub, store) = (
                Arc::clone(&hub),
                Arc::clone(&store) as Arc<dyn SessionStore>,
            );
            async move {
                let stream = follow(&hub, store, id, 0, POLL).await.unwrap().unwrap();
                stream.collect::<Vec<Bytes>>().await
            }
        });
        gate.reached.notified().await;

        for seq in 1..3 {
            store.append_events(id, &[line(seq, false)]).await.unwrap();
            live.send(line(seq, false)).unwrap();
        }
        store.complete(id, &approved(), &closing(3)).await.unwrap();
        live.send(line(3, true)).unwrap();
        gate.gate.notify_one();

        let lines = tokio::time::timeout(std::time::Duration::from_secs(60), follower)
            .await
            .expect("the follower saw every event and ended")
            .unwrap();
        let expected: Vec<Bytes> = (1..=3).map(|seq| line(seq, false).line).collect();
        assert_eq!(lines, expected);
    }
}
