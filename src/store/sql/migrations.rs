//! The schema's migrations (`src/store/migrations/`), compiled into the binary.
//!
//! Built here from the files rather than by sqlx's `migrate!` macro: the macro's crate links
//! sqlx's database drivers into the compiler's own process, so every build would compile SQLite's
//! C source and the PostgreSQL driver a second time, for the macro alone. What sqlx records of a
//! migration (version, description, checksum) is the same either way; a test holds this list to
//! sqlx's own reading of the folder, so a database migrated by any build of the service accepts
//! any other.

use std::borrow::Cow;
use std::sync::LazyLock;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// Each migration's version, its description (the file name's words) and its statements, in
/// order. A new file in the folder goes here too; the test below fails until it does.
const FILES: [(i64, &str, &str); 6] = [
    (
        1,
        "sessions",
        include_str!("../migrations/0001_sessions.sql"),
    ),
    (
        2,
        "tenants and keys",
        include_str!("../migrations/0002_tenants_and_keys.sql"),
    ),
    (
        3,
        "webhooks",
        include_str!("../migrations/0003_webhooks.sql"),
    ),
    (4, "reviews", include_str!("../migrations/0004_reviews.sql")),
    (
        5,
        "challenges",
        include_str!("../migrations/0005_challenges.sql"),
    ),
    (
        6,
        "capture links",
        include_str!("../migrations/0006_capture_links.sql"),
    ),
];

/// Every migration, run in one transaction each at start-up.
pub(super) static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    Migrator::with_migrations(
        FILES
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_compiled_migrations_are_the_folder_as_sqlx_reads_it() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/migrations");
        let from_folder = Migrator::new(folder.as_path()).await.unwrap();
        let summary = |m: &Migration| {
            (
                m.version,
                m.description.to_string(),
                m.migration_type,
                m.checksum.to_vec(),
                m.no_tx,
            )
        };
        let expected: Vec<_> = from_folder.iter().map(summary).collect();
        let compiled: Vec<_> = MIGRATOR.iter().map(summary).collect();
        assert_eq!(
            expected.len(),
            FILES.len(),
            "a file in the folder is not in FILES"
        );
        assert_eq!(compiled, expected);
    }
}
