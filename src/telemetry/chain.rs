//! An error with its causes, as one line: what a log field or a terminal shows.

use std::error::Error;
use std::fmt;

/// Displays an error as `what failed: why: why`, walking `source()`.
///
/// A cause whose text its parent's message already ends with is left out: some libraries'
/// errors (sqlx's, for one) repeat their source in their own message, and each cause should be
/// read once.
pub struct ErrorChain<'a>(pub &'a dyn Error);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parent = self.0.to_string();
        f.write_str(&parent)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !parent.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            parent = text;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the session store")]
    struct Top(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("the session store is unavailable while connecting")]
    struct Middle(#[source] std::io::Error);

    /// Like sqlx's errors: its message ends with its source's.
    #[derive(Debug, thiserror::Error)]
    #[error("error communicating with database: {0}")]
    struct Repeats(#[source] std::io::Error);

    fn refused() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused")
    }

    #[test]
    fn every_cause_follows_its_parent_once() {
        let error = Top(Middle(refused()));

        assert_eq!(
            ErrorChain(&error).to_string(),
            "cannot open the session store: the session store is unavailable while connecting: \
             connection refused"
        );
    }

    #[test]
    fn a_cause_its_parent_already_quotes_is_not_repeated() {
        let error = Repeats(refused());

        assert_eq!(
            ErrorChain(&error).to_string(),
            "error communicating with database: connection refused"
        );
    }

    #[test]
    fn an_error_without_a_source_is_its_message() {
        assert_eq!(ErrorChain(&refused()).to_string(), "connection refused");
    }
}
