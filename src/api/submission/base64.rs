//! Images sent as base64 text, bare or as a data URL.

use ::base64::Engine as _;
use ::base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;

use crate::api::error::FieldError;

/// Standard base64, padding optional: clients differ on it and it carries no meaning.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &::base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The bytes `value` encodes, or `None` with the problem added to `errors` under `field`.
pub(super) fn decode(field: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<Bytes> {
    // Accept a data URL as well as bare base64: browsers hand out the former.
    let payload = match value.split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => value,
    };
    match BASE64.decode(payload.trim()) {
        Ok(bytes) => Some(bytes.into()),
        Err(error) => {
            errors.push(FieldError::new(
                field,
                "bad_base64",
                format!("not valid base64: {error}"),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_base64_and_data_urls_decode_with_or_without_padding() {
        let mut errors = Vec::new();
        for value in ["aGk=", "aGk", "data:image/png;base64,aGk=", " aGk=\n"] {
            assert_eq!(
                decode("selfie.frames[0]", value, &mut errors).as_deref(),
                Some(&b"hi"[..]),
                "{value}"
            );
        }
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn text_that_is_not_base64_is_reported_under_its_field() {
        let mut errors = Vec::new();

        assert_eq!(decode("document.front", "not base64!", &mut errors), None);

        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "document.front");
        assert_eq!(errors[0].code, "bad_base64");
    }
}
