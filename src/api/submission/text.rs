//! A JSON string that borrows from the request body: what carries a base64 image.

use std::borrow::Cow;

use serde::Deserialize;

/// A JSON string that borrows from the request body unless it has escapes (serde's own `Cow`
/// only borrows as a bare field, never inside `Option` or `Vec`). Base64 images are megabytes;
/// this saves a copy of each.
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(value)))
            }
            fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(value.to_owned())))
            }
            fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(value)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_without_escapes_borrows_from_the_body_inside_an_option() {
        let parsed: Option<Text<'_>> = serde_json::from_str("\"aGVsbG8=\"").unwrap();
        assert!(matches!(parsed, Some(Text(Cow::Borrowed("aGVsbG8=")))));
    }

    #[test]
    fn a_string_with_escapes_is_unescaped_into_its_own_copy() {
        let parsed: Text<'_> = serde_json::from_str("\"aGVs\\/bG8=\"").unwrap();
        assert!(matches!(parsed, Text(Cow::Owned(text)) if text == "aGVs/bG8="));
    }
}
