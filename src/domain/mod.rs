//! Checked domain types. Requests become these at the API edge (parse, don't validate), so the
//! orchestrator and the agents never see an unchecked string or byte blob.

mod check;
mod claimed;
mod image;
mod record;
mod sandbox;
mod session;
mod session_id;

pub use check::{CheckResult, CheckStatus, Decision};
pub use claimed::{Claimed, MAX_CLAIM_LEN};
pub use image::{ImageData, ImageError, ImageFormat, ImageLimits};
pub use record::{Completion, Erasure, SessionRecord, SessionStatus};
pub use sandbox::{
    DirectiveError, MAX_CPU_MS, MAX_EXTRACTED_BYTES, MAX_LATENCY_MS, SandboxDirective,
    SandboxResult, SandboxScript, is_reason_code,
};
pub use session::{Document, DocumentType, NewSession, Reference, ReferenceError, Selfie};
pub use session_id::SessionId;
