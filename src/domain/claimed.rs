//! What the applicant says about themselves, to compare with what the document says.
//!
//! Personal data: it lives in the session's stored inputs (erased with them) and in memory
//! while the session runs, and never in a log line (`Debug` is redacted).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Longest claimed name or number, in characters.
pub const MAX_CLAIM_LEN: usize = 100;

/// What the applicant says about themselves: at least one field.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Claimed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_names: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_number: Option<String>,
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Claimed(<redacted>)")
    }
}

impl Claimed {
    /// The fields that break the rules, each with why; empty when the claim is usable.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        for (field, value) in [
            ("claimed.surname", &self.surname),
            ("claimed.given_names", &self.given_names),
            ("claimed.document_number", &self.document_number),
        ] {
            if let Some(value) = value {
                if value.trim().is_empty() {
                    problems.push((field, "must not be empty".to_owned()));
                } else if value.chars().count() > MAX_CLAIM_LEN {
                    problems.push((field, format!("at most {MAX_CLAIM_LEN} characters")));
                } else if value.chars().any(char::is_control) {
                    problems.push((field, "must not contain control characters".to_owned()));
                }
            }
        }
        if *self == Self::default() {
            problems.push(("claimed", "name at least one field".to_owned()));
        }
        problems
    }
}
