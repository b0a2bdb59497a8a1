//! What a problem body may repeat of the request: identifiers, never values.

/// A client-supplied name (a JSON key, a part name) is echoed only if it looks like an
/// identifier; anything else might be data.
pub(in crate::api) fn echoable(name: &str) -> String {
    let plain = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'[' | b']'));
    if plain {
        name.to_owned()
    } else {
        "<unnamed>".to_owned()
    }
}

/// A field path with every segment that does not look like an identifier hidden.
pub(super) fn echoable_path(path: &str) -> String {
    path.split('.').map(echoable).collect::<Vec<_>>().join(".")
}

/// serde's message without the offending value: serde quotes the input it rejects (a whole
/// base64 image, a name sent in the wrong field), and problem bodies must not echo personal data.
/// Field names and the list of expected values are kept.
pub(super) fn describe(error: &serde_json::Error) -> String {
    const KINDS: [&str; 5] = [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
        "unknown field",
    ];
    if error.classify() != serde_json::error::Category::Data {
        // Syntax and end-of-input messages name the expected token, never the input.
        return error.to_string();
    }
    let message = error.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(head, _)| head);
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return format!("missing field `{}`", echoable(field));
    }
    let kind = KINDS
        .into_iter()
        .find(|kind| message.starts_with(kind))
        .unwrap_or("invalid value");
    // The expected part is ours; the value before it is the client's and may itself contain
    // ", expected ", so split at the last one.
    match message.rsplit_once(", expected ") {
        Some((_, expected)) => format!("{kind}: expected {expected}"),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Person {
        surname: u32,
    }

    #[test]
    fn a_rejected_value_is_left_out_and_what_was_expected_kept() {
        let error =
            serde_json::from_str::<Person>(r#"{"surname": "Eriksson, expected x"}"#).unwrap_err();
        assert!(error.to_string().contains("Eriksson"), "{error}");

        assert_eq!(describe(&error), "invalid type: expected u32");
    }

    #[test]
    fn names_are_echoed_only_when_they_look_like_identifiers() {
        assert_eq!(echoable("selfie[0]"), "selfie[0]");
        assert_eq!(echoable("Anna Eriksson"), "<unnamed>");
        assert_eq!(echoable_path("claimed.Anna Eriksson"), "claimed.<unnamed>");
    }
}
