//! Who owns a session: a tenant (one customer of the service) in one mode. Test and live data of
//! one tenant are apart as if they were two tenants: a test key never reads a live session.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest tenant name.
pub const MAX_TENANT_LEN: usize = 64;

/// A tenant's name: 1 to 64 of `a-z`, `0-9`, `-`, `_`, starting with a letter or digit. Names
/// are chosen by the operator (`keys create --tenant NAME`); there is no tenant table, a tenant
/// exists while it has keys or sessions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a tenant name is 1 to {MAX_TENANT_LEN} of a-z, 0-9, '-' and '_', starting with a letter or digit"
)]
pub struct TenantError;

impl TenantId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TenantId {
    type Err = TenantError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let valid = (1..=MAX_TENANT_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(TenantError)
        }
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Test or live: in a key's prefix, on every session, and in every query.
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
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// May script sandbox agents; its sessions are apart from live ones.
    Test,
    Live,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Live => "live",
        }
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(mode: &str) -> Result<Self, Self::Err> {
        match mode {
            "test" => Ok(Self::Test),
            "live" => Ok(Self::Live),
            other => Err(format!("`{other}` is not a mode: test or live")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The data space a session lives in and a key may see: one tenant, one mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub tenant: TenantId,
    pub mode: Mode,
}

/// Who acts: the owner whose data it may touch, and the public id of the key it acts with (what
/// sessions record as their creator and eraser).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub owner: Owner,
    pub key_id: KeyId,
}

prefixed_id!(
    /// An API key's public id, `key_` and 16 letters or digits: what lists, logs and audit records
    /// show. The secret key itself is never kept.
    KeyId, "key_", 16, b"_-", "a key id", "key_uaZVCmYi6P63m8D1"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_short_lowercase_slugs() {
        for good in ["acme", "acme-bank_eu", "0day", &"a".repeat(64)] {
            assert!(good.parse::<TenantId>().is_ok(), "{good}");
        }
        for bad in ["", "Acme", "-acme", "acme bank", "acme/eu", &"a".repeat(65)] {
            assert!(bad.parse::<TenantId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn modes_and_key_ids_round_trip_through_text() {
        assert_eq!("live".parse::<Mode>().unwrap(), Mode::Live);
        assert!("prod".parse::<Mode>().is_err());
        assert_eq!("key_ab12".parse::<KeyId>().unwrap().as_str(), "key_ab12");
        assert!("ab12".parse::<KeyId>().is_err());
        assert!("key_".parse::<KeyId>().is_err());
    }
}
