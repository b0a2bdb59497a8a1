//! Model-backed engines that load in the background after start-up.
//!
//! Loading the models takes longer than a load balancer's first health probe, so the service
//! binds at once and loads them on the blocking pool; readiness stays 503 (and new sessions are
//! refused) until every agent is warm, so a cold instance gets no traffic.

use std::sync::{Arc, OnceLock};

use super::AgentError;
use crate::models::ModelError;

/// An engine an agent shares with its loader.
pub struct Warm<T>(Arc<OnceLock<T>>);

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
        let loader = Loader(Box::new(move || {
            let engine = load()?;
            let _ = target.set(engine);
            Ok(())
        }));
        (Self(cell), loader)
    }

    pub fn ready(&self) -> bool {
        self.0.get().is_some()
    }

    /// The engine, or an agent error while it is still loading (admission refuses sessions
    /// until then, so only a session recovered at start-up can see this).
    pub fn get(&self) -> Result<&T, AgentError> {
        self.0
            .get()
            .ok_or_else(|| AgentError::Failed("the agent's models are still loading".into()))
    }
}

/// Loads one engine; run once, on the blocking pool.
pub struct Loader(Box<dyn FnOnce() -> Result<(), ModelError> + Send>);

impl Loader {
    pub fn load(self) -> Result<(), ModelError> {
        (self.0)()
    }
}
