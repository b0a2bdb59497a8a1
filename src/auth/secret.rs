//! The keys themselves: made from the OS's random source, recognisable by their prefix, kept
//! only as a hash.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::domain::{KeyHash, Mode, random_text};

/// Random characters after the prefix: 32 of 62 letters and digits, 190 bits.
const SECRET_LEN: usize = 32;

/// A secret API key. Printed once, when it is made; its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    text: String,
    mode: Mode,
}

/// A string that cannot be a key: wrong prefix, length or characters. Says nothing of the
/// string itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an API key (kyc_test_... or kyc_live_... and 32 letters or digits)")]
pub struct MalformedKey;

impl ApiKey {
    /// A new key of `mode`.
    pub fn generate(mode: Mode) -> Self {
        Self {
            text: format!("{}{}", prefix(mode), random_text(SECRET_LEN)),
            mode,
        }
    }

    /// Checks the shape of a presented key; only the store knows whether it exists.
    pub fn parse(text: &str) -> Result<Self, MalformedKey> {
        let (mode, secret) = [Mode::Test, Mode::Live]
            .into_iter()
            .find_map(|mode| text.strip_prefix(prefix(mode)).map(|rest| (mode, rest)))
            .ok_or(MalformedKey)?;
        if secret.len() != SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(MalformedKey);
        }
        Ok(Self {
            text: text.to_owned(),
            mode,
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.text.as_bytes()).into())
    }

    /// The key itself: for the one place that shows it (the output of `keys create`) and for
    /// clients that send it.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}<redacted>)", prefix(self.mode))
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}<redacted>", prefix(self.mode))
    }
}

fn prefix(mode: Mode) -> &'static str {
    match mode {
        Mode::Test => "kyc_test_",
        Mode::Live => "kyc_live_",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::KeyId;

    #[test]
    fn generated_keys_carry_their_mode_and_parse_back() {
        let key = ApiKey::generate(Mode::Live);
        assert!(key.expose().starts_with("kyc_live_"));
        assert_eq!(key.expose().len(), "kyc_live_".len() + SECRET_LEN);
        let parsed = ApiKey::parse(key.expose()).unwrap();
        assert_eq!(parsed.mode(), Mode::Live);
        assert_eq!(parsed.hash(), key.hash());
        assert_ne!(ApiKey::generate(Mode::Live).hash(), key.hash());
    }

    #[test]
    fn anything_else_is_malformed() {
        let good = ApiKey::generate(Mode::Test);
        let secret = &good.expose()["kyc_test_".len()..];
        for bad in [
            String::new(),
            "kyc_test_".to_owned(),
            format!("kyc_prod_{secret}"),
            format!("kyc_test_{}", &secret[1..]),
            format!("kyc_test_{secret}x"),
            format!("kyc_test_{}!", &secret[1..]),
            format!("kyc_test_{}é", &secret[2..]),
        ] {
            assert_eq!(ApiKey::parse(&bad), Err(MalformedKey), "{bad}");
        }
    }

    #[test]
    fn a_key_never_prints() {
        let key = ApiKey::generate(Mode::Test);
        let secret = &key.expose()["kyc_test_".len()..];
        assert!(!format!("{key:?} {key}").contains(secret));
    }

    #[test]
    fn key_ids_are_random_and_well_formed() {
        let (a, b) = (KeyId::generate(), KeyId::generate());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 4 + 16);
    }
}
