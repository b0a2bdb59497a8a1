//! Public ids: a prefix and random letters or digits (`key_...`, `we_...`, `msg_...`), what
//! lists, logs and audit records show. One macro makes each such type.

/// Whether `id` is `prefix` and 1 to 64 letters, digits or bytes of `extra`.
pub(super) fn is_id(id: &str, prefix: &str, extra: &[u8]) -> bool {
    id.strip_prefix(prefix).is_some_and(|rest| {
        (1..=64).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    })
}

/// A public id type: `generate()` makes one of `$len` random letters and digits after
/// `$prefix`; parsing accepts letters, digits and the bytes of `$extra`.
macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $len:literal, $extra:expr, $what:literal, $example:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, example = $example)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Self {
                Self(format!("{}{}", Self::PREFIX, super::random_text($len)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(id: &str) -> Result<Self, Self::Err> {
                if super::public_id::is_id(id, Self::PREFIX, $extra) {
                    Ok(Self(id.to_owned()))
                } else {
                    Err(format!(concat!("`{}` is not ", $what, " (", $prefix, "...)"), id))
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
