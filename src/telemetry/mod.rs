//! Logs and metrics.
//!
//! Logs are JSON lines for machines (`ts`, `level`, `target`, `msg`, then the fields of every
//! enclosing span, so `session_id` and `request_id` sit at the top level of each line) or
//! pretty text for a terminal. Metrics are Prometheus text on `GET /metrics`.
//!
//! Nothing personal is ever logged: spans carry ids, agents log signals and reason codes, and
//! request bodies are never formatted.

#[cfg(test)]
pub(crate) mod capture;
mod chain;
mod json;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetrySettings};

pub use chain::ErrorChain;
pub use json::JsonLines;

/// Installs the global subscriber writing to `writer`; a second call is a no-op (tests build
/// many applications in one process). Also routes panics into the log.
pub fn init<W>(settings: &TelemetrySettings, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let output = match settings.format {
        LogFormat::Json => JsonLines::new(writer).boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
    {
        install_panic_hook();
    }
}

/// Panics also become one log line inside the current span (so they carry the session id),
/// then go to the previous hook (stderr) as before. The message is the panic's own text,
/// written by our code.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(panic = %message, %location, "panic");
        previous(info);
    }));
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            const SECONDS: &[f64] = &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 8.0, 10.0,
            ];
            PrometheusBuilder::new()
                .set_buckets(SECONDS)
                .expect("the bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}
