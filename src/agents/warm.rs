//! Model-backed engines that load in the background after start-up.
//!
//! Loading the models takes longer than a load balancer's first health probe, so the service
//! binds at once and loads them on the blocking pool; readiness stays 503 (and new sessions are
//! refused) until every agent is warm, so a cold instance gets no traffic. A model that fails
//! to load keeps it so, and readiness says why.

use std::sync::{Arc, OnceLock};

use super::AgentError;
use crate::models::ModelError;

/// An engine an agent shares with its loader: empty while loading, then the engine or why it
/// could not be loaded.
pub struct Warm<T>(Arc<OnceLock<Result<T, String>>>);

impl<T> Clone for Warm<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T: Send + Sync + 'static> Warm<T> {
    /// An empty engine and the job that fills it.
    pub fn new(load: impl FnOnce() -> Result<T, ModelError> + Send + 'static) -> (Self, Loader) {
        let cell = Arc::new(OnceLock::new());
        let target = Arc::clone(&cell);
        // A loader that panics (a model file that a parser chokes on) is a failed load, not
        // an instance stuck at "loading".
        let loader = Loader(Box::new(move || {
            let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load))
                .unwrap_or(Err(ModelError::Panicked));
            match loaded {
                Ok(engine) => {
                    let _ = target.set(Ok(engine));
                    Ok(())
                }
                Err(error) => {
                    let _ = target.set(Err(error.to_string()));
                    Err(error)
                }
            }
        }));
        (Self(cell), loader)
    }

    pub fn ready(&self) -> bool {
        matches!(self.0.get(), Some(Ok(_)))
    }

    pub fn failed(&self) -> bool {
        matches!(self.0.get(), Some(Err(_)))
    }

    /// The engine, or an agent error while it is loading or after it failed to (admission
    /// refuses sessions until it is loaded, so a session rarely sees this).
    pub fn get(&self) -> Result<&T, AgentError> {
        match self.0.get() {
            Some(Ok(engine)) => Ok(engine),
            Some(Err(_)) => Err(AgentError::Failed(
                "the agent's models failed to load".into(),
            )),
            None => Err(AgentError::Failed(
                "the agent's models are still loading".into(),
            )),
        }
    }
}

/// Where an engine's loading stands, for readiness.
pub trait Loading {
    fn ready(&self) -> bool;
    fn failed(&self) -> bool;
}

impl<T: Send + Sync + 'static> Loading for Warm<T> {
    fn ready(&self) -> bool {
        Warm::ready(self)
    }

    fn failed(&self) -> bool {
        Warm::failed(self)
    }
}

/// Loads one engine; run once, on the blocking pool.
pub struct Loader(Box<dyn FnOnce() -> Result<(), ModelError> + Send>);

impl Loader {
    pub fn load(self) -> Result<(), ModelError> {
        (self.0)()
    }
}

/// Runs `loaders` one after another on the blocking pool and logs how it went: the time they
/// took, or the first failure (the rest are not tried; readiness then says `models_failed`,
/// and the process never takes traffic).
pub fn load_in_background(loaders: Vec<Loader>) {
    if loaders.is_empty() {
        return;
    }
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        for loader in loaders {
            if let Err(error) = loader.load() {
                tracing::error!(
                    error = %crate::telemetry::ErrorChain(&error),
                    "a model failed to load; readiness stays 503 (models_failed)"
                );
                return;
            }
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "models loaded; ready"
        );
    });
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn an_engine_is_ready_once_loaded() {
        let (warm, loader) = Warm::new(|| Ok(7));
        assert!(!warm.ready() && !warm.failed());
        assert!(warm.get().is_err());

        loader.load().unwrap();

        assert!(warm.ready());
        assert_eq!(warm.get(), Ok(&7));
    }

    #[test]
    fn an_engine_that_fails_to_load_says_so() {
        let (warm, loader) =
            Warm::<u8>::new(|| Err(ModelError::Missing(PathBuf::from("models/x.onnx"))));

        assert!(loader.load().is_err());

        assert!(warm.failed() && !warm.ready());
        assert_eq!(
            warm.get(),
            Err(AgentError::Failed(
                "the agent's models failed to load".into()
            ))
        );
    }
}
