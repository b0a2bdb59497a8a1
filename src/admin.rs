//! `kyc-orchestrator keys ...`: API keys managed from the command line, against the store the
//! settings name (the same layering as the server: `--config`, `KYC_ENV`, `KYC__*`).
//!
//! A new key goes to stdout alone, everything else to stderr, so a script can capture it:
//! `KYC_API_KEY=$(kyc-orchestrator keys create --tenant acme)`.

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;

use crate::auth::{ApiKey, KeyManager, ManageError, NewKey};
use crate::config::Settings;
use crate::domain::{KeyId, KeyRecord, Mode, Scope, Scopes, TenantId};
use crate::store::{self, StoreError};

/// What `keys` does.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Creates a key and prints it (alone, on stdout): it is shown this once.
    Create {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long, default_value = "test")]
        mode: Mode,
        /// A scope the key gets (repeat for more); none: every scope.
        #[arg(long = "scope")]
        scopes: Vec<Scope>,
        /// Who or what uses the key (a person, a system).
        #[arg(long)]
        label: Option<String>,
        /// e.g. 90d, 12h; none: the key does not expire.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// Lists keys (never the keys themselves).
    List {
        #[arg(long)]
        tenant: Option<TenantId>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revokes a key: every instance refuses it within 60 s.
    Revoke { id: KeyId },
    /// Prints a new key for the same tenant, mode, scopes and label; the old one keeps working
    /// for the grace period.
    Rotate {
        id: KeyId,
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
}

/// Why a `keys` command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot open the key store")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manage(#[from] ManageError),
    #[error("cannot write the output")]
    Output(#[from] std::io::Error),
}

/// Runs one `keys` command.
pub async fn keys(settings: &Settings, command: KeysCommand) -> Result<(), AdminError> {
    let manager = KeyManager::new(store::open_keys(&settings.store).await?);
    match command {
        KeysCommand::Create {
            tenant,
            mode,
            scopes,
            label,
            expires_in,
        } => {
            let new = NewKey {
                tenant,
                mode,
                scopes: if scopes.is_empty() {
                    Scopes::All
                } else {
                    Scopes::only(scopes)
                },
                label,
                expires_in,
            };
            let (key, record) = manager.create(new).await?;
            announce("created", &key, &record)?;
        }
        KeysCommand::List { tenant, json } => {
            let keys = manager.list(tenant.as_ref()).await?;
            let mut out = std::io::stdout().lock();
            if json {
                for key in &keys {
                    writeln!(
                        out,
                        "{}",
                        serde_json::to_string(&KeyView::of(key)).expect("a key view serialises")
                    )?;
                }
            } else {
                table(&mut out, &keys)?;
            }
        }
        KeysCommand::Revoke { id } => {
            manager.revoke(&id).await?;
            eprintln!(
                "revoked {id}; instances that cached it refuse it within {} s",
                crate::auth::MAX_CACHE_TTL.as_secs()
            );
        }
        KeysCommand::Rotate { id, grace } => {
            let (key, record) = manager.rotate(&id, grace).await?;
            announce("rotated", &key, &record)?;
            eprintln!(
                "{id} keeps working for {}",
                humantime::format_duration(grace)
            );
        }
    }
    Ok(())
}

/// The key on stdout, what it is on stderr.
fn announce(what: &str, key: &ApiKey, record: &KeyRecord) -> std::io::Result<()> {
    eprintln!(
        "{what} {} for tenant {} ({}), scopes {}{}; the key is shown once, below",
        record.id,
        record.owner.tenant,
        record.owner.mode,
        match record.scopes {
            Scopes::All => "* (every scope)".to_owned(),
            only => only.to_text(),
        },
        record
            .expires_at
            .map(|at| format!(", expires {}", time(at)))
            .unwrap_or_default(),
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", key.expose())?;
    out.flush()
}

#[derive(serde::Serialize)]
struct KeyView<'a> {
    id: &'a KeyId,
    tenant: &'a TenantId,
    mode: Mode,
    label: Option<&'a str>,
    scopes: Scopes,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    replaces: Option<&'a KeyId>,
}

impl<'a> KeyView<'a> {
    fn of(key: &'a KeyRecord) -> Self {
        Self {
            id: &key.id,
            tenant: &key.owner.tenant,
            mode: key.owner.mode,
            label: key.label.as_deref(),
            scopes: key.scopes,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            replaces: key.replaces.as_ref(),
        }
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn table(out: &mut impl Write, keys: &[KeyRecord]) -> std::io::Result<()> {
    let optional = |at: Option<DateTime<Utc>>| at.map_or_else(|| "-".to_owned(), time);
    let rows: Vec<[String; 9]> = keys
        .iter()
        .map(|k| {
            [
                k.id.to_string(),
                k.owner.tenant.to_string(),
                k.owner.mode.to_string(),
                k.label.clone().unwrap_or_else(|| "-".into()),
                k.scopes.to_text().replace(' ', ","),
                time(k.created_at),
                optional(k.last_used_at),
                optional(k.expires_at),
                optional(k.revoked_at),
            ]
        })
        .collect();
    let header = [
        "ID",
        "TENANT",
        "MODE",
        "LABEL",
        "SCOPES",
        "CREATED",
        "LAST USED",
        "EXPIRES",
        "REVOKED",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[&str]| -> std::io::Result<()> {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        writeln!(out, "{}", padded.join("  ").trim_end())
    };
    line(out, &header)?;
    for row in &rows {
        line(out, &row.each_ref().map(String::as_str))?;
    }
    Ok(())
}
