//! Black-box tests through the HTTP API, one module per area, one shared binary.

mod admission;
mod auth;
mod bad_input;
mod capture;
mod challenges;
mod decisions;
mod documents;
#[macro_use]
mod durable;
mod events;
mod extending;
mod faces;
mod health;
mod helpers;
mod images;
mod keys_cli;
mod kyc_cli;
mod openapi;
mod orchestration;
mod postgres_tls;
mod remote;
mod render;
mod reviews;
mod shutdown;
mod startup;
mod telemetry;
mod webhooks;
