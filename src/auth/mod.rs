//! API keys: what they look like, how a request proves it holds one, and how operators manage
//! them.
//!
//! - `secret` makes keys (`kyc_test_...`, `kyc_live_...`: the mode in the prefix, 190 random
//!   bits from the OS) and hashes them; only the hash is stored.
//! - `authenticator` turns an `Authorization: Bearer` header into a [`Caller`]: the key's
//!   record, read through a short cache so a request costs a hash and a map lookup, not a query;
//!   then the route's scope, then the key's rate limit (`limiter`).
//! - `manage` creates, lists, revokes and rotates keys, for the `kyc-orchestrator keys`
//!   commands and for in-process callers (tests, tools).
//!
//! A key grants one tenant's data in one mode; the store filters every read by them.

mod authenticator;
mod limiter;
mod manage;
mod secret;

pub use authenticator::{AuthError, Authenticator, BootstrapError, Caller, MAX_CACHE_TTL};
pub use limiter::RateLimiter;
pub use manage::{KeyManager, ManageError, NewKey};
pub use secret::{ApiKey, MalformedKey};
