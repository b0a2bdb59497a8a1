//! Standard Webhooks signatures: `v1,` and the base64 of HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, with the secret's bytes as the key; several
//! signatures are separated by spaces, and a receiver accepts the message when any one matches.
//! Secrets are `whsec_` and the base64 of 32 random bytes, the form receivers' libraries take.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::domain::{SigningSecret, random_bytes};

/// A new secret.
pub fn new_secret() -> SigningSecret {
    SigningSecret::new(format!(
        "{}{}",
        SigningSecret::PREFIX,
        STANDARD.encode(random_bytes::<32>())
    ))
}

/// The key bytes of a secret; `None` when it is not `whsec_` and base64.
fn key(secret: &SigningSecret) -> Option<Vec<u8>> {
    let encoded = secret.expose().strip_prefix(SigningSecret::PREFIX)?;
    STANDARD.decode(encoded).ok().filter(|key| !key.is_empty())
}

/// The `webhook-signature` header for a message: one signature per secret.
pub fn signature(secrets: &[&SigningSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|secret| key(secret))
        .map(|key| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's test vectors, as its reference
    /// libraries check them.
    #[test]
    fn signs_the_specifications_example() {
        let secret = SigningSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        let body = br#"{"test": 2432232314}"#;

        let signed = signature(&[&secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);

        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_give_two_signatures_and_new_secrets_are_random() {
        let (a, b) = (new_secret(), new_secret());

        let signed = signature(&[&a, &b], "msg_1", 1, b"{}");

        assert_ne!(a, b);
        assert!(a.expose().starts_with("whsec_"));
        assert_eq!(key(&a).map(|k| k.len()), Some(32));
        let parts: Vec<&str> = signed.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
    }
}
