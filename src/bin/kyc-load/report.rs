//! What a run measured: latency histograms, errors by kind, and the server's CPU and memory.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::session::Outcome;

/// Microsecond histograms, three significant figures.
#[derive(Clone)]
pub struct Micros(Histogram<u64>);

impl Default for Micros {
    fn default() -> Self {
        Self(Histogram::new(3).expect("3 significant figures is valid"))
    }
}

impl Micros {
    pub fn record(&mut self, duration: Duration) {
        // Saturates at the histogram's (auto-resizing) range; a zero would be lost.
        let _ = self.0.record((duration.as_micros() as u64).max(1));
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// p50, p90, p99 and max in milliseconds.
    pub fn summary(&self) -> Value {
        json!({
            "p50": self.ms(0.5), "p90": self.ms(0.9), "p99": self.ms(0.99),
            "max": self.0.max() as f64 / 1000.0,
        })
    }

    fn line(&self) -> String {
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.0.max() as f64 / 1000.0
        )
    }
}

/// Sessions' outcomes, as they come in.
#[derive(Default)]
pub struct Sessions {
    latency: Micros,
    overhead: Micros,
    /// The deadline every session hangs until, and each session's server-side duration minus
    /// it.
    lateness: Option<(Duration, Micros)>,
    agents: BTreeMap<String, Micros>,
    /// Review decisions' answers, when the workload decides them.
    reviews: Micros,
    errors: BTreeMap<String, u64>,
}

impl Sessions {
    /// Reports how late each session completed after `deadline` (for runs that hang an agent).
    pub fn with_deadline(deadline: Option<Duration>) -> Self {
        Self {
            lateness: deadline.map(|deadline| (deadline, Micros::default())),
            ..Self::default()
        }
    }

    pub fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Completed(completed) => {
                for (agent, duration) in completed.agents {
                    self.agents.entry(agent).or_default().record(duration);
                }
                self.latency.record(completed.latency);
                if let Some(review) = completed.review {
                    self.reviews.record(review);
                }
                self.overhead.record(completed.overhead);
                if let Some((deadline, lateness)) = &mut self.lateness {
                    lateness.record(completed.server.saturating_sub(*deadline));
                }
            }
            Outcome::Refused(_) => *self.errors.entry("http_503".into()).or_default() += 1,
            Outcome::Failed(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }
}

/// Health probes from their own client while the load runs.
#[derive(Default)]
pub struct Probes {
    pub latency: Micros,
    pub errors: u64,
}

/// The server's CPU time and peak RSS, from Linux's /proc.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// utime + stime in clock ticks.
    ticks: u64,
    peak_rss_kib: u64,
    rss_kib: u64,
}

impl Usage {
    pub fn of(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after_name = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| -> Option<u64> {
            status
                .lines()
                .find(|line| line.starts_with(key))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        Some(Self {
            ticks,
            peak_rss_kib: kib("VmHWM:")?,
            rss_kib: kib("VmRSS:")?,
        })
    }
}

/// The server's usage before the load, when measurement began and when it ended.
pub struct Server {
    pub idle: Usage,
    pub before: Usage,
    pub after: Usage,
}

/// Everything a run prints.
pub struct Run<'a> {
    pub mode: &'static str,
    pub load: String,
    pub seconds: f64,
    pub sessions: &'a Sessions,
    pub probes: Option<&'a Probes>,
    pub server: Option<Server>,
}

impl Run<'_> {
    fn completed(&self) -> u64 {
        self.sessions.latency.len()
    }

    fn server(&self) -> Option<Value> {
        let Server {
            idle,
            before,
            after,
        } = self.server.as_ref()?;
        // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ).
        let cpu_seconds = after.ticks.saturating_sub(before.ticks) as f64 / 100.0;
        Some(json!({
            "cpu_percent": 100.0 * cpu_seconds / self.seconds,
            "idle_rss_mib": idle.rss_kib as f64 / 1024.0,
            "peak_rss_mib": after.peak_rss_kib as f64 / 1024.0,
        }))
    }

    pub fn json(&self) -> Value {
        let sessions = self.sessions;
        json!({
            "mode": self.mode,
            "load": self.load,
            "seconds": self.seconds,
            "completed": self.completed(),
            "sessions_per_s": self.completed() as f64 / self.seconds,
            "latency_ms": sessions.latency.summary(),
            "overhead_ms": sessions.overhead.summary(),
            "lateness_ms": sessions.lateness.as_ref().map(|(_, h)| h.summary()),
            "agents_ms": sessions.agents.iter()
                .map(|(agent, h)| (agent.clone(), h.summary()))
                .collect::<serde_json::Map<_, _>>(),
            "review_ms": (sessions.reviews.len() > 0).then(|| sessions.reviews.summary()),
            "errors": sessions.errors,
            "health_ms": self.probes.map(|p| json!({
                "probes": p.latency.len(), "errors": p.errors, "latency": p.latency.summary(),
            })),
            "server": self.server(),
        })
    }

    pub fn print(&self) {
        let sessions = self.sessions;
        println!("{} loop, {} s, {}", self.mode, self.seconds, self.load);
        println!(
            "completed         {} ({:.1} sessions/s)",
            self.completed(),
            self.completed() as f64 / self.seconds
        );
        println!("latency ms        {}", sessions.latency.line());
        println!("overhead ms       {}", sessions.overhead.line());
        if let Some((_, lateness)) = &sessions.lateness {
            println!("past deadline ms  {}", lateness.line());
        }
        for (agent, h) in &sessions.agents {
            println!("{:<17} {}", format!("{agent} ms"), h.line());
        }
        if sessions.reviews.len() > 0 {
            println!("review ms         {}", sessions.reviews.line());
        }
        println!("errors            {:?}", sessions.errors);
        if let Some(probes) = self.probes {
            println!(
                "health ms         {}  ({} probes, {} errors)",
                probes.latency.line(),
                probes.latency.len(),
                probes.errors
            );
        }
        if let Some(server) = self.server() {
            println!(
                "server            cpu {:.0} %, RSS {:.1} MiB before the load, peak {:.1} MiB",
                server["cpu_percent"].as_f64().unwrap_or_default(),
                server["idle_rss_mib"].as_f64().unwrap_or_default(),
                server["peak_rss_mib"].as_f64().unwrap_or_default()
            );
        }
    }
}
