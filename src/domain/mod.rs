//! Checked domain types. Requests become these at the API edge (parse, don't validate), so the
//! orchestrator and the agents never see an unchecked string or byte blob.

#[macro_use]
mod public_id;
mod api_key;
mod capture;
mod challenge;
mod check;
mod claimed;
mod image;
mod random;
mod record;
mod review;
mod sandbox;
mod session;
mod session_id;
mod tenant;
mod webhook;

pub use api_key::{KeyHash, KeyRecord, Scope, Scopes};
pub use capture::{CaptureLink, CaptureLinkId, CaptureRefusal, CaptureToken, MalformedToken};
pub use challenge::{
    Challenge, ChallengeId, ChallengeRefusal, ChallengeStep, SelfieChallenge, draw_steps,
};
pub use check::{CheckResult, CheckStatus, Decision};
pub use claimed::{Claimed, MAX_CLAIM_LEN};
pub use image::{ImageData, ImageError, ImageFormat, ImageLimits};
pub use random::{random_bytes, random_text};
pub use record::{Completion, Erasure, ListPosition, SessionQuery, SessionRecord, SessionStatus};
pub use review::{
    MAX_NOTE_CHARS, MAX_REVIEW_REASONS, NoteError, QueuePosition, Refusal, Resolution, ReviewCase,
    ReviewDecision, ReviewQuery, ReviewState, ReviewStatus, Reviewer, Step, Verdict, check_note,
    step,
};
pub use sandbox::{
    DirectiveError, MAX_CPU_MS, MAX_EXTRACTED_BYTES, MAX_LATENCY_MS, SandboxDirective,
    SandboxResult, SandboxScript, is_reason_code,
};
pub use session::{Document, DocumentType, NewSession, Reference, ReferenceError, Selfie};
pub use session_id::SessionId;
pub use tenant::{KeyId, MAX_TENANT_LEN, Mode, Owner, Principal, TenantError, TenantId};
pub use webhook::{
    Attempt, AttemptOutcome, Delivery, DeliveryState, DueDelivery, EVENT_TYPES, Endpoint,
    EndpointId, MessageId, OutboxMessage, RetiringSecret, SigningSecret,
};
