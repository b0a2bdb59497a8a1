//! An API key as it is kept: everything about it except the key itself, of which only a hash
//! is stored.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{KeyId, Owner};

/// What a key may do. Each route needs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Start sessions.
    SessionsWrite,
    /// Read sessions, their events and the list.
    SessionsRead,
    /// Erase a session's personal data.
    SessionsErase,
    /// Manage webhook endpoints.
    WebhooksManage,
    /// Decide sessions sent to review.
    ReviewsWrite,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Self::SessionsWrite,
        Self::SessionsRead,
        Self::SessionsErase,
        Self::WebhooksManage,
        Self::ReviewsWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionsWrite => "sessions:write",
            Self::SessionsRead => "sessions:read",
            Self::SessionsErase => "sessions:erase",
            Self::WebhooksManage => "webhooks:manage",
            Self::ReviewsWrite => "reviews:write",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("`{name}` is not a scope: {}", known.join(", "))
            })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scopes of a key: every scope (also those a later version adds, as with a full-access key
/// of any payments API), or a chosen few.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scopes {
    All,
    Only(u32),
}

impl Scopes {
    pub fn only(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self::Only(scopes.into_iter().fold(0, |bits, scope| bits | scope.bit()))
    }

    pub fn allows(self, scope: Scope) -> bool {
        match self {
            Self::All => true,
            Self::Only(bits) => bits & scope.bit() != 0,
        }
    }

    /// As stored and shown: `*`, or the scopes' names separated by spaces (OAuth's habit).
    pub fn to_text(self) -> String {
        match self {
            Self::All => "*".to_owned(),
            Self::Only(_) => Scope::ALL
                .into_iter()
                .filter(|&scope| self.allows(scope))
                .map(Scope::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim() == "*" {
            return Ok(Self::All);
        }
        let scopes = text
            .split_whitespace()
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::only(scopes))
    }
}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_text())
    }
}

/// SHA-256 of a key. The keys are random enough (190 bits) that a fast hash is as good as a slow
/// KDF: nobody can guess a key from its hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(<redacted>)")
    }
}

/// A key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: KeyId,
    pub owner: Owner,
    pub scopes: Scopes,
    /// Who or what uses it (a person, a system): what review and audit records show beside the id.
    pub label: Option<String>,
    pub hash: KeyHash,
    pub created_at: DateTime<Utc>,
    /// Updated at most once a minute per instance, not on every request.
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The key this one replaced by rotation.
    pub replaces: Option<KeyId>,
}

impl KeyRecord {
    /// Neither revoked nor expired at `now`.
    pub fn usable_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_their_stored_text() {
        let some = Scopes::only([Scope::SessionsRead, Scope::SessionsWrite]);
        assert_eq!(some.to_text(), "sessions:write sessions:read");
        assert_eq!(Scopes::parse(&some.to_text()).unwrap(), some);
        assert_eq!(Scopes::parse("*").unwrap(), Scopes::All);
        assert!(some.allows(Scope::SessionsRead));
        assert!(!some.allows(Scope::SessionsErase));
        assert!(Scopes::All.allows(Scope::ReviewsWrite));
        assert!(Scopes::parse("sessions:delete").is_err());
    }

    #[test]
    fn hashes_round_trip_through_hex_and_never_print() {
        let hash = KeyHash([0xab; 32]);
        assert_eq!(KeyHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(KeyHash::from_hex("zz"), None);
        assert_eq!(format!("{hash:?}"), "KeyHash(<redacted>)");
    }
}
