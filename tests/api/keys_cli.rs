//! `kyc-orchestrator keys ...` against a SQLite file, as an operator runs it: the new key alone on
//! stdout, everything about it on stderr, and a list that never shows a key.

use std::process::{Command, Output};

use serde_json::Value;

fn keys(db: &std::path::Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_kyc-orchestrator"))
        .env("KYC__STORE__URL", format!("sqlite://{}", db.display()))
        .env_remove("KYC_ENV")
        .arg("keys")
        .args(args)
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "keys {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn keys_are_created_listed_rotated_and_revoked_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kyc.db");

    let created = keys(
        &db,
        &[
            "create",
            "--tenant",
            "acme",
            "--mode",
            "live",
            "--scope",
            "sessions:read",
            "--label",
            "ops team",
            "--expires-in",
            "90d",
        ],
    );
    let key = stdout(&created);
    let listed = stdout(&keys(&db, &["list", "--json"]));
    let first: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    let id = first["id"].as_str().unwrap().to_owned();
    let rotated = keys(&db, &["rotate", &id, "--grace", "1h"]);
    keys(&db, &["revoke", &id]);
    let table = stdout(&keys(&db, &["list", "--tenant", "acme"]));

    assert_eq!(key.lines().count(), 1, "the key alone on stdout");
    assert!(key.starts_with("kyc_live_"), "{key}");
    let told = String::from_utf8_lossy(&created.stderr);
    assert!(told.contains(&id) && told.contains("shown once"), "{told}");
    assert_eq!(first["tenant"], "acme");
    assert_eq!(first["mode"], "live");
    assert_eq!(first["scopes"], "sessions:read");
    assert_eq!(first["label"], "ops team");
    assert!(first["expires_at"].is_string());
    let new_key = stdout(&rotated);
    assert!(new_key.starts_with("kyc_live_") && new_key != key);
    assert_eq!(table.lines().count(), 3, "a header and two keys: {table}");
    let revoked_at = |line: &str| line.split_whitespace().last().unwrap().to_owned();
    let old_row = table.lines().find(|l| l.starts_with(&id)).unwrap();
    let new_row = table
        .lines()
        .find(|l| l.starts_with("key_") && !l.starts_with(&id));
    assert!(
        revoked_at(old_row).ends_with('Z'),
        "REVOKED filled in: {table}"
    );
    assert_eq!(
        revoked_at(new_row.unwrap()),
        "-",
        "the new key is not revoked"
    );
    for secret in [&key, &new_key] {
        assert!(!listed.contains(secret.trim()) && !table.contains(secret.trim()));
    }
}

#[test]
fn a_bad_argument_or_an_unknown_key_fails_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kyc-orchestrator"))
            .env(
                "KYC__STORE__URL",
                format!("sqlite://{}", dir.path().join("kyc.db").display()),
            )
            .arg("keys")
            .args(args)
            .output()
            .unwrap()
    };

    let bad_tenant = run(&["create", "--tenant", "Not A Tenant"]);
    let unknown = run(&["revoke", "key_nobody"]);

    assert!(!bad_tenant.status.success());
    assert!(bad_tenant.stdout.is_empty());
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no API key key_nobody"));
}
