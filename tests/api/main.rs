//! Black-box tests through the HTTP API, one module per area, one shared binary.

mod admission;
mod bad_input;
mod decisions;
mod documents;
mod durable;
mod events;
mod extending;
mod faces;
mod health;
mod helpers;
mod orchestration;
mod render;
mod shutdown;
mod startup;
mod telemetry;
