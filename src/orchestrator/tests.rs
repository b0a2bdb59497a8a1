//! The orchestrator with agents that misbehave in ways no sandbox agent may (a sandbox agent
//! that blocked a runtime thread would hand every client a way to stall the server).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::*;
use crate::agents::{AgentContext, AgentError, Entry, Report};
use crate::config::{PolicySettings, Settings};
use crate::domain::{CheckStatus, Document, ImageData, ImageLimits, Selfie};
use crate::store::MemoryStore;
use crate::store::fixtures::{self, TestStore};

/// What a test agent does when run.
enum Behaviour {
    /// Passes at once.
    Pass,
    /// Waits this long on the runtime, then passes.
    SleepThenPass(Duration),
    /// Blocks its thread (never yields) for this long, then passes.
    BlockThenPass(Duration),
    /// Blocks its thread until the test lets it go, then passes.
    BlockUntil(Mutex<std::sync::mpsc::Receiver<()>>),
    /// Reports the deadline it was given, then passes.
    ReportDeadline(tokio::sync::mpsc::UnboundedSender<tokio::time::Instant>),
    /// Is ready only once the flag is set (as an agent whose models are loading).
    WarmsUp(Arc<std::sync::atomic::AtomicBool>),
}

struct TestAgent {
    name: &'static str,
    behaviour: Behaviour,
}

#[async_trait]
impl Agent for TestAgent {
    fn ready(&self) -> bool {
        match &self.behaviour {
            Behaviour::WarmsUp(warm) => warm.load(std::sync::atomic::Ordering::SeqCst),
            _ => true,
        }
    }

    async fn run(&self, ctx: AgentContext) -> Result<Report, AgentError> {
        match &self.behaviour {
            Behaviour::Pass | Behaviour::WarmsUp(_) => {}
            Behaviour::SleepThenPass(duration) => tokio::time::sleep(*duration).await,
            Behaviour::BlockThenPass(duration) => std::thread::sleep(*duration),
            Behaviour::BlockUntil(release) => {
                let _ = release.lock().unwrap().recv();
            }
            Behaviour::ReportDeadline(report) => {
                report.send(ctx.deadline()).unwrap();
            }
        }
        Ok(Report::passed(Some(1.0)))
    }
}

fn orchestrator(agents: Vec<(TestAgent, &[&str], Duration)>, deadline: Duration) -> Orchestrator {
    orchestrator_on(agents, deadline, Arc::new(MemoryStore::new(100)))
}

fn orchestrator_on(
    agents: Vec<(TestAgent, &[&str], Duration)>,
    deadline: Duration,
    store: Arc<dyn SessionStore>,
) -> Orchestrator {
    let agents = agents
        .into_iter()
        .map(|(agent, deps, timeout)| Entry {
            name: agent.name.to_owned(),
            agent: Arc::new(agent),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            timeout,
        })
        .collect();
    let registry = AgentRegistry::custom(agents);
    let mut settings = Settings::defaults().orchestrator;
    settings.session_deadline_ms = deadline.as_millis() as u64;
    let policy = Policy::new(&PolicySettings { decline_on: vec![] });
    Orchestrator::new(registry, &settings, policy, store, Durability::default()).unwrap()
}

fn request() -> NewSession {
    let mut png = Vec::new();
    image::RgbImage::new(4, 4)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let limits = ImageLimits {
        max_bytes: 1 << 20,
        max_pixels: 1 << 20,
        max_side: 100,
    };
    let image = ImageData::parse(Bytes::from(png), &limits).unwrap();
    NewSession {
        reference: None,
        selfie: Selfie::new(vec![image.clone()]).unwrap(),
        document: Document {
            kind: None,
            front: image,
            back: None,
        },
        claimed: None,
        sandbox: None,
    }
}

/// Runs one session to its end.
async fn run(orchestrator: &Orchestrator) -> SessionOutcome {
    let started = orchestrator
        .start(request(), &fixtures::principal(), None)
        .await
        .unwrap();
    started.outcome.await.unwrap()
}

fn status(outcome: &SessionOutcome, agent: &str) -> CheckStatus {
    outcome
        .checks
        .iter()
        .find(|(name, _)| name == agent)
        .map(|(_, check)| check.status)
        .unwrap()
}

const LONG: Duration = Duration::from_secs(3600);

/// The session loop waits on the deadline itself: an agent that blocks its thread and never
/// yields cannot hold the session past it. Real time on two workers (paused time needs a single
/// thread, which the agent would block); the only wait with a bound is the failure detector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_blocks_its_thread_cannot_hold_the_session_past_the_deadline() {
    let (release, blocked) = std::sync::mpsc::channel();
    let orchestrator = orchestrator(
        vec![
            (
                TestAgent {
                    name: "stuck",
                    behaviour: Behaviour::BlockUntil(Mutex::new(blocked)),
                },
                &[],
                LONG,
            ),
            (
                TestAgent {
                    name: "quick",
                    behaviour: Behaviour::Pass,
                },
                &[],
                LONG,
            ),
        ],
        Duration::from_millis(200),
    );

    let started = orchestrator
        .start(request(), &fixtures::principal(), None)
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(60), started.outcome)
        .await
        .expect("the session completed while the agent was still blocked")
        .unwrap();
    release.send(()).unwrap();

    assert_eq!(status(&outcome, "stuck"), CheckStatus::Timeout);
    assert_eq!(status(&outcome, "quick"), CheckStatus::Passed);
    assert_eq!(
        outcome.reasons,
        ["agent_timeout:stuck", "deadline_exceeded"]
    );
}

/// A timeout wrapper polls the work before its timer, so work that blocks past its deadline
/// and is ready on that same poll comes back `Ok`; it must still count as a timeout.
#[tokio::test]
async fn a_result_that_arrives_after_the_agents_own_timeout_is_a_timeout() {
    let orchestrator = orchestrator(
        vec![(
            TestAgent {
                name: "late",
                behaviour: Behaviour::BlockThenPass(Duration::from_millis(200)),
            },
            &[],
            Duration::from_millis(20),
        )],
        LONG,
    );

    let outcome = run(&orchestrator).await;

    assert_eq!(status(&outcome, "late"), CheckStatus::Timeout);
}

#[tokio::test(start_paused = true)]
async fn an_agent_is_given_the_earlier_of_its_timeout_and_the_time_left() {
    let (report, mut deadlines) = tokio::sync::mpsc::unbounded_channel();
    let agent = |name, timeout| {
        (
            TestAgent {
                name,
                behaviour: Behaviour::ReportDeadline(report.clone()),
            },
            &[][..],
            timeout,
        )
    };
    let orchestrator = orchestrator(
        vec![
            agent("patient", LONG),
            agent("hasty", Duration::from_millis(500)),
        ],
        Duration::from_secs(8),
    );
    let start = tokio::time::Instant::now();

    run(&orchestrator).await;

    let mut given = vec![
        deadlines.recv().await.unwrap(),
        deadlines.recv().await.unwrap(),
    ];
    given.sort();
    assert_eq!(
        given,
        [
            start + Duration::from_millis(500),
            start + Duration::from_secs(8)
        ]
    );
}

/// Storing each event takes 40 ms: the agents must not wait for it, the completion must wait
/// for every event before it, and the stored history must be whole and in order.
#[tokio::test(start_paused = true)]
async fn a_slow_store_holds_back_the_completion_but_not_the_agents() {
    let agents = vec![
        (
            TestAgent {
                name: "first",
                behaviour: Behaviour::SleepThenPass(Duration::from_millis(10)),
            },
            &[][..],
            LONG,
        ),
        (
            TestAgent {
                name: "second",
                behaviour: Behaviour::SleepThenPass(Duration::from_millis(10)),
            },
            &["first"][..],
            LONG,
        ),
    ];
    let store = Arc::new(TestStore {
        append_delay: Duration::from_millis(40),
        ..TestStore::new()
    });
    let orchestrator = orchestrator_on(agents, Duration::from_secs(5), store.clone());

    let started = orchestrator
        .start(request(), &fixtures::principal(), None)
        .await
        .unwrap();
    let outcome = started.outcome.await.unwrap();

    assert_eq!(outcome.decision, Decision::Approved);
    assert_eq!(outcome.critical_path, Duration::from_millis(20));
    assert!(
        outcome.elapsed >= Duration::from_millis(40),
        "completed before its events were stored: {:?}",
        outcome.elapsed
    );
    let lines = store.events_after(started.id, 0).await.unwrap().unwrap();
    let events: Vec<Event> = lines
        .iter()
        .map(|record| serde_json::from_slice(&record.line).unwrap())
        .collect();
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::SessionCompleted { .. }
    ));
    // `second` started as soon as `first` completed, not after the store caught up.
    let second_started = events
        .iter()
        .find(|e| matches!(&e.kind, EventKind::AgentStarted { agent } if agent == "second"))
        .unwrap();
    assert_eq!(
        second_started.ts - events[0].ts,
        chrono::Duration::milliseconds(10)
    );
}

/// When the connection drops while a commit's answer is on its way, the write has landed but is
/// reported failed. Whichever write that happens to, the session is completed without waiting
/// for the retry loop (the event writer asks the store what it holds before writing again), no
/// retry is left over once it has run, and every event is stored once and in order.
#[tokio::test(start_paused = true)]
async fn a_write_that_landed_but_reported_failure_is_not_written_twice() {
    let session = |lose_answer_to| async move {
        let agent = |name| TestAgent {
            name,
            behaviour: Behaviour::SleepThenPass(Duration::from_millis(10)),
        };
        let agents = vec![
            (agent("first"), &[][..], LONG),
            (agent("second"), &["first"][..], LONG),
        ];
        let store = Arc::new(TestStore {
            append_delay: Duration::from_millis(3),
            lose_answer_to,
            ..TestStore::new()
        });
        let orchestrator = orchestrator_on(agents, Duration::from_secs(5), store.clone());
        let started = orchestrator
            .start(request(), &fixtures::principal(), None)
            .await
            .unwrap();
        let outcome = started.outcome.await.unwrap();
        assert_eq!(outcome.decision, Decision::Approved);
        let before_retry = store.get(started.id).await.unwrap().unwrap().status;
        orchestrator.retry_pending().await;
        let retried = orchestrator.inner.pending.lock().unwrap().is_empty();
        (store, started.id, before_retry, retried)
    };

    let (store, _, _, _) = session(0).await;
    let writes = store.writes.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        writes >= 3,
        "only {writes} writes: nothing to lose in between"
    );
    for lost in 1..=writes {
        let (store, id, before_retry, retried) = session(lost).await;
        assert_eq!(
            before_retry,
            SessionStatus::Completed,
            "the answer to write {lost} of {writes} was lost"
        );
        let events = store.events_after(id, 0).await.unwrap().unwrap();
        let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "write {lost}"
        );
        assert!(events.last().unwrap().terminal, "write {lost}");
        assert!(
            retried,
            "write {lost}: the completion is still waiting for a retry"
        );
    }
}

/// A heartbeat the store never answers (a half-open connection) counts as the store being down
/// once its time is up, so readiness turns 503 instead of waiting on TCP.
#[tokio::test(start_paused = true)]
async fn a_heartbeat_without_an_answer_marks_the_store_unavailable() {
    let store = Arc::new(TestStore {
        heartbeat_hangs: true,
        ..TestStore::new()
    });
    let agent = TestAgent {
        name: "only",
        behaviour: Behaviour::Pass,
    };
    let orchestrator = orchestrator_on(vec![(agent, &[], LONG)], Duration::from_secs(5), store);
    assert!(orchestrator.store_available());
    let started = tokio::time::Instant::now();

    let answered = tokio::time::timeout(
        Duration::from_secs(60),
        orchestrator.heartbeat(Duration::from_secs(2)),
    )
    .await
    .expect("the heartbeat gave up within its limit");

    assert!(!answered);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert!(!orchestrator.store_available());
}

#[tokio::test]
async fn sessions_are_refused_until_every_agent_is_ready() {
    let warm = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let orchestrator = orchestrator(
        vec![(
            TestAgent {
                name: "ocr",
                behaviour: Behaviour::WarmsUp(Arc::clone(&warm)),
            },
            &[],
            Duration::from_secs(1),
        )],
        Duration::from_secs(5),
    );

    assert!(!orchestrator.agents_ready());
    assert!(matches!(
        orchestrator
            .start(request(), &fixtures::principal(), None)
            .await,
        Err(OrchestratorError::NotReady)
    ));

    warm.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(orchestrator.agents_ready());
    assert_eq!(run(&orchestrator).await.decision, Decision::Approved);
}

/// The stored history of session `id`: its events' kinds, after checking that their numbers
/// run from 1 without a gap.
async fn history(store: &dyn SessionStore, id: SessionId) -> Vec<EventKind> {
    let lines = store.events_after(id, 0).await.unwrap().unwrap();
    let events: Vec<Event> = lines
        .iter()
        .map(|record| serde_json::from_slice(&record.line).unwrap())
        .collect();
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    events.into_iter().map(|event| event.kind).collect()
}

/// The runner panics while its events are still on their way to a slow store: the conclusion
/// waits for them, so its terminal event takes the next number and is stored, and the history
/// is whole.
#[tokio::test(start_paused = true)]
async fn a_runner_that_panics_with_events_in_flight_still_ends_its_session_in_order() {
    let agent = |name| TestAgent {
        name,
        behaviour: Behaviour::SleepThenPass(Duration::from_millis(1)),
    };
    let agents = vec![
        (agent("first"), &[][..], LONG),
        (agent("second"), &[][..], LONG),
    ];
    let store = Arc::new(TestStore {
        append_delay: Duration::from_millis(40),
        ..TestStore::new()
    });
    let orchestrator = orchestrator_on(agents, Duration::from_secs(5), store.clone());
    let mut request = request();
    request.reference = Some(crate::domain::Reference::parse(PANIC_IN_RUNNER.into(), 64).unwrap());

    let started = orchestrator
        .start(request, &fixtures::principal(), None)
        .await
        .unwrap();
    let outcome = started.outcome.await.unwrap();

    assert_eq!(outcome.decision, Decision::Review);
    assert_eq!(outcome.reasons, ["internal_error"]);
    let record = store.get(started.id).await.unwrap().unwrap();
    assert_eq!(record.status, SessionStatus::Completed);
    let kinds = history(&*store, started.id).await;
    let agents_completed = kinds
        .iter()
        .filter(|kind| matches!(kind, EventKind::AgentCompleted { .. }))
        .count();
    assert_eq!(
        agents_completed, 2,
        "the events queued at the panic are kept"
    );
    assert!(
        matches!(
            &kinds[kinds.len() - 2..],
            [
                EventKind::SessionCompleted { .. },
                EventKind::ReviewOpened { .. }
            ]
        ),
        "{kinds:?}"
    );
}

/// An insert that committed while its answer was lost: the client is told the store is
/// unavailable, and the row would stay `running` with no runner. Maintenance finds it and
/// completes it as interrupted; an insert that never committed leaves nothing behind.
#[tokio::test(start_paused = true)]
async fn a_session_whose_insert_answer_was_lost_is_completed_as_interrupted() {
    let agents = vec![(
        TestAgent {
            name: "only",
            behaviour: Behaviour::Pass,
        },
        &[][..],
        LONG,
    )];
    let store = Arc::new(TestStore {
        lose_insert_answers: true,
        ..TestStore::new()
    });
    let orchestrator = orchestrator_on(agents, Duration::from_secs(5), store.clone());
    let principal = fixtures::principal();

    let refused = orchestrator.start(request(), &principal, None).await;

    assert!(
        matches!(&refused, Err(OrchestratorError::Store(e)) if e.is_unavailable()),
        "{:?}",
        refused.err()
    );
    let id = store.inserted.lock().unwrap()[0];
    let record = store.get(id).await.unwrap().unwrap();
    assert_eq!(
        record.status,
        SessionStatus::Running,
        "committed all the same"
    );

    orchestrator.settle_doubtful().await;
    orchestrator.drain().await;

    let record = store.get(id).await.unwrap().unwrap();
    assert_eq!(record.status, SessionStatus::Completed);
    let completion = record.completion.unwrap();
    assert_eq!(completion.decision, Decision::Review);
    assert_eq!(completion.reasons, ["interrupted"]);
    let kinds = history(&*store, id).await;
    assert!(
        matches!(kinds[0], EventKind::SessionInterrupted { .. }),
        "{kinds:?}"
    );
    assert!(orchestrator.inner.doubtful.lock().unwrap().is_empty());
}
