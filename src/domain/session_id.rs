//! The session identifier: a UUIDv7, so ids sort by creation time in logs and in the store.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Identifies one verification session.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = String, format = Uuid, example = "01a1ffba-9973-76c3-9344-15a4a723fd1a")]
pub struct SessionId(Uuid);

impl SessionId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Its 32 lower-case hex digits, without dashes: a W3C trace id.
    pub fn simple(&self) -> String {
        self.0.simple().to_string()
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for SessionId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_sort_by_creation() {
        let first = SessionId::new();
        let second = SessionId::new();
        assert_eq!(first.to_string().parse::<SessionId>().unwrap(), first);
        assert!(first < second);
        assert!("not-a-uuid".parse::<SessionId>().is_err());
    }
}
