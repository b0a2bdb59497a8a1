//! kyc-orchestrator: an identity-verification (KYC) service.
//!
//! A client POSTs a session (selfie frames and identity-document images). The [`api`] checks it
//! at the edge into [`domain`] types and hands it to the [`orchestrator`], which runs the
//! configured [`agents`] as a dependency graph under the session's deadline (`liveness` and
//! `doc_capture` at once; `ocr` after `doc_capture`; `face_match` after both), records every
//! event in the [`store`], streams them to followers, and decides `approved`, `declined` or
//! `review` with reason codes. The real agents measure images with [`vision`] and load their
//! model files through [`models`]. A decision reaches the tenant's backend through
//! [`webhooks`]. [`app`] wires it all to a listener; [`config`] and [`telemetry`] are what an
//! operator touches. An agent can also run elsewhere: [`agent_server`] serves agents to the
//! `http` agents of other instances.

pub mod admin;
pub mod agent_server;
pub mod agents;
pub mod api;
pub mod app;
pub mod auth;
pub mod capture;
pub mod challenges;
pub mod clock;
pub mod config;
pub mod cpu;
pub mod domain;
pub mod http;
pub mod models;
pub mod orchestrator;
pub mod reviews;
pub mod specimen;
pub mod store;
pub mod telemetry;
pub mod vision;
pub mod webhooks;

pub use app::{Application, StartupError};
pub use config::Settings;
