//! What the user sees. On a terminal, one line per agent with a spinner while it runs, then its
//! status, duration and reasons, then the decision. Anywhere else (a pipe, CI) the same as plain
//! lines as things happen, with no spinner and no colour; `NO_COLOR` turns colour off on a
//! terminal too. `--json` prints the events themselves.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

/// Writes a line to stdout. When the reader has gone (`kyc sessions list | head -1`) there is
/// nobody left to tell anything, so the program ends quietly with status 0, as Unix tools do,
/// instead of panicking on the broken pipe.
pub fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// Where events go.
pub trait Sink {
    fn event(&mut self, event: &Value, line: &str);
    /// Something the user should know that is not an event (a lost connection).
    fn notice(&mut self, message: &str);
    /// The session completed.
    fn finish(&mut self) {}
}

/// The live view on a terminal, plain lines elsewhere.
pub fn for_terminal() -> Box<dyn Sink> {
    let terminal = std::io::stdout().is_terminal()
        && std::env::var("TERM").map_or(true, |term| term != "dumb");
    console::set_colors_enabled(terminal && std::env::var_os("NO_COLOR").is_none());
    if terminal {
        Box::new(Live::default())
    } else {
        Box::new(Plain)
    }
}

/// The events as NDJSON.
pub struct Raw;

impl Sink for Raw {
    fn event(&mut self, _: &Value, line: &str) {
        say(line);
    }
    fn notice(&mut self, message: &str) {
        eprintln!("kyc: {message}");
    }
}

/// One line per thing that happens.
pub struct Plain;

impl Sink for Plain {
    fn event(&mut self, event: &Value, _: &str) {
        if let Some(line) = describe(event) {
            say(line);
        }
    }
    fn notice(&mut self, message: &str) {
        say(message);
    }
}

/// Spinners that turn into results, drawn on stdout (the terminal the choice was made for).
pub struct Live {
    bars: MultiProgress,
    agents: BTreeMap<String, ProgressBar>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            agents: BTreeMap::new(),
        }
    }
}

impl Live {
    fn bar(&mut self, agent: &str) -> ProgressBar {
        if let Some(bar) = self.agents.get(agent) {
            return bar.clone();
        }
        let bar = self.bars.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:<12} {msg}").expect("a valid template"),
        );
        bar.set_prefix(agent.to_owned());
        bar.set_message(style("waiting").dim().to_string());
        self.agents.insert(agent.to_owned(), bar.clone());
        bar
    }
}

impl Sink for Live {
    fn event(&mut self, event: &Value, _: &str) {
        let agent = event["agent"].as_str().unwrap_or_default().to_owned();
        match event["type"].as_str().unwrap_or_default() {
            "session.started" | "session.resumed" => {
                if let Some(line) = describe(event) {
                    let _ = self.bars.println(style(line).dim().to_string());
                }
                for name in event["agents"].as_array().into_iter().flatten() {
                    self.bar(name.as_str().unwrap_or_default());
                }
            }
            "agent.started" => {
                let bar = self.bar(&agent);
                bar.set_message("running");
                bar.enable_steady_tick(Duration::from_millis(80));
            }
            "agent.completed" | "agent.failed" | "agent.timed_out" | "agent.skipped" => {
                let bar = self.bar(&agent);
                bar.set_style(done());
                bar.finish_with_message(outcome(event));
            }
            "session.completed" => {
                // Under the agents' lines, which stop redrawing once finished.
                self.finish();
                say(decision(event));
            }
            kind if kind.starts_with("review.") => {
                if let Some(line) = describe(event) {
                    say(line);
                }
            }
            _ => {
                if let Some(line) = describe(event) {
                    let _ = self.bars.println(line);
                }
            }
        }
    }
    fn notice(&mut self, message: &str) {
        let _ = self.bars.println(style(message).yellow().to_string());
    }
    fn finish(&mut self) {
        for bar in self.agents.values() {
            if !bar.is_finished() {
                bar.set_style(done());
                bar.finish();
            }
        }
    }
}

/// An agent's line once it has a result: no spinner.
fn done() -> ProgressStyle {
    ProgressStyle::with_template("  {prefix:<12} {msg}").expect("a valid template")
}

/// An agent's result: status, duration, reasons or why.
fn outcome(event: &Value) -> String {
    let (status, painted) = match event["type"].as_str().unwrap_or_default() {
        "agent.completed" => {
            let status = event["status"].as_str().unwrap_or("?").to_owned();
            let painted = if status == "passed" {
                style(status.clone()).green()
            } else {
                style(status.clone()).red()
            };
            (status, painted)
        }
        "agent.failed" => ("error".into(), style("error".to_owned()).red()),
        "agent.timed_out" => ("timeout".into(), style("timeout".to_owned()).red()),
        _ => ("skipped".into(), style("skipped".to_owned()).dim()),
    };
    let mut text = format!(
        "{painted}{}",
        " ".repeat(8usize.saturating_sub(status.len()))
    );
    if let Some(ms) = event["duration_ms"].as_f64() {
        text.push_str(&format!("{ms:>7.0} ms"));
    }
    let reasons: Vec<&str> = event["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !reasons.is_empty() {
        text.push_str(&format!("  {}", reasons.join(", ")));
    }
    for why in ["error", "reason"] {
        if let Some(why) = event[why].as_str() {
            text.push_str(&format!("  {why}"));
        }
    }
    text
}

/// An event's reason codes, separated by commas.
fn reason_list(event: &Value) -> String {
    event["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn decision(event: &Value) -> String {
    let decision = event["decision"].as_str().unwrap_or("?");
    let painted = match decision {
        "approved" => style(decision).green().bold(),
        "declined" => style(decision).red().bold(),
        _ => style(decision).yellow().bold(),
    };
    let reasons: Vec<&str> = event["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut line = format!("decision: {painted}");
    if !reasons.is_empty() {
        line.push_str(&format!(" ({})", reasons.join(", ")));
    }
    if let Some(ms) = event["duration_ms"].as_f64() {
        line.push_str(&format!(" in {ms:.0} ms"));
    }
    line
}

/// A plain line for an event.
fn describe(event: &Value) -> Option<String> {
    let agent = event["agent"].as_str().unwrap_or_default();
    Some(match event["type"].as_str()? {
        "session.started" => format!(
            "session {} started",
            event["session_id"].as_str().unwrap_or("?")
        ),
        "session.resumed" => format!(
            "session resumed on another instance (attempt {})",
            event["attempt"]
        ),
        "session.interrupted" => format!(
            "session interrupted: {}",
            event["reason"].as_str().unwrap_or("?")
        ),
        "agent.started" => format!("{agent:<12} running"),
        "agent.completed" | "agent.failed" | "agent.timed_out" | "agent.skipped" => {
            format!("{agent:<12} {}", outcome(event))
        }
        "session.completed" => decision(event),
        "review.opened" => "review: waiting for a reviewer".to_owned(),
        // Who and what, never the note: it may name the applicant.
        "review.decided" => {
            let reviewer = &event["reviewer"];
            let who = reviewer["label"]
                .as_str()
                .or(reviewer["key_id"].as_str())
                .unwrap_or("?");
            format!(
                "review: {who} decided {} ({}), review {}",
                event["decision"].as_str().unwrap_or("?"),
                reason_list(event),
                event["status"].as_str().unwrap_or("?").replace('_', " ")
            )
        }
        "review.resolved" => format!("after review, {}", decision(event)),
        _ => return None,
    })
}

/// `kyc sessions list` as a table.
pub fn session_table(items: &[Value]) {
    say(format_args!(
        "{:<36}  {:<9}  {:<8}  {:<27}  REFERENCE",
        "ID", "STATUS", "DECISION", "CREATED"
    ));
    for item in items {
        let text = |name: &str| item[name].as_str().unwrap_or("-").to_owned();
        say(format_args!(
            "{:<36}  {:<9}  {:<8}  {:<27}  {}",
            text("id"),
            text("status"),
            text("decision"),
            text("created_at"),
            text("reference")
        ));
    }
}

/// `kyc reviews list` as a table.
pub fn review_table(items: &[Value]) {
    say(format_args!(
        "{:<36}  {:<14}  {:>8}  {:<9}  REASONS",
        "SESSION", "STATUS", "WAITING", "DECISIONS"
    ));
    for item in items {
        let waiting = item["age_seconds"].as_u64().unwrap_or_default();
        let reasons: Vec<&str> = item["reasons"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        say(format_args!(
            "{:<36}  {:<14}  {:>8}  {:<9}  {}",
            item["session_id"].as_str().unwrap_or("-"),
            item["status"].as_str().unwrap_or("-"),
            age(waiting),
            item["decisions"].as_array().map_or(0, Vec::len),
            reasons.join(",")
        ));
    }
}

/// Seconds as the largest whole unit: `42s`, `17m`, `5h`, `3d`.
fn age(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3_600 => format!("{}m", seconds / 60),
        3_600..86_400 => format!("{}h", seconds / 3_600),
        _ => format!("{}d", seconds / 86_400),
    }
}
