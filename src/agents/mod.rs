//! The agents: one file per kind of agent, the traits they implement, and the registry that
//! builds the configured ones.
//!
//! An agent is handed the session's checked inputs and its dependencies' outputs
//! ([`AgentContext`]), and returns a [`Report`] (its check passed or failed, with reasons and
//! evidence) or an [`AgentError`] (it could not decide). An agent kind is one file: its settings,
//! an [`AgentKind`] impl (its `kind` name, reason codes and constructor) and, when its check is
//! CPU work, a [`CpuAgent`] impl (inputs gathered on the runtime, the check computed on the CPU
//! pool). [`Kinds::builtin`] registers each kind in one line. The orchestrator owns the plan,
//! timeouts, cancellation and panics.

mod agent;
mod context;
mod kind;
pub mod registry;
pub mod selfie;
pub mod warm;
pub mod wire;

pub mod doc_capture;
pub mod face_match;
pub mod liveness;
pub mod ocr;
pub mod remote;
pub mod sandbox;

pub(crate) use agent::rounded;
pub use agent::{Agent, AgentError, Output, RemoteFailure, Report, Verdict};
pub use context::AgentContext;
pub use kind::{AgentKind, CheckSettings, CpuAgent, Resources};
pub use registry::{AgentRegistry, Entry, Kinds, RegistryError, standalone};
