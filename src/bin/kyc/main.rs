//! `kyc`: the command-line client of kyc-orchestrator. Verifies an applicant from files on disk
//! with live progress, and reads, lists, follows and erases sessions.
//!
//!     export KYC_API_KEY=kyc_test_...           # and KYC_URL, default http://127.0.0.1:8009
//!     kyc verify --document passport.jpg --selfie f1.jpg f2.jpg f3.jpg
//!     kyc sessions list --decision review
//!     kyc reviews list
//!     kyc reviews decide <session id> --decision approved --reason document_verified_manually
//!
//! Exit status: 0 approved, 3 review, 4 declined, 1 an error (the service's problem detail on
//! stderr), 2 bad usage. The key is never printed.

mod client;
mod verify;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use client::{Client, Failure};

#[derive(Parser)]
#[command(name = "kyc", version, about = "Identity verification from a terminal")]
struct Cli {
    /// The service.
    #[arg(
        long,
        env = "KYC_URL",
        default_value = "http://127.0.0.1:8009",
        global = true
    )]
    url: String,
    /// An API key of the service.
    #[arg(long, env = "KYC_API_KEY", hide_env_values = true, global = true)]
    key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verifies an applicant: posts the images, shows each agent's progress, then the decision.
    Verify(VerifyArgs),
    /// Reads, lists, follows and erases sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// The review queue, and a reviewer's decisions.
    #[command(subcommand)]
    Reviews(ReviewsCommand),
    /// Issues a liveness challenge: its id, the head movements to make, and when it expires.
    /// Capture the frames while the applicant makes them, then `kyc verify --challenge ID`.
    Challenge {
        /// The challenge as JSON instead of lines of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ReviewsCommand {
    /// Sessions waiting for a reviewer (or in `--status`), the longest waiting first.
    List {
        /// open, pending_second or resolved; without it, open and pending_second.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// One JSON object per case instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Decides a session in review as the key's holder; prints the session as it stands after.
    Decide {
        #[arg(value_parser = session_id)]
        id: String,
        #[arg(long, value_enum)]
        decision: Verdict,
        /// A reason code (repeat for more): `review.reasons` or an agent's code.
        #[arg(long = "reason", required = true)]
        reasons: Vec<String>,
        /// Free text for the audit trail (at most 2,000 characters).
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Verdict {
    Approved,
    Declined,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The document's front.
    #[arg(long)]
    pub document: PathBuf,
    /// The document's back (an ID card's zone is there).
    #[arg(long)]
    pub back: Option<PathBuf>,
    /// Selfie frames, in capture order.
    #[arg(long, required = true, num_args = 1..)]
    pub selfie: Vec<PathBuf>,
    #[arg(long = "type", value_enum)]
    pub kind: Option<DocumentKind>,
    /// Your own reference for the session.
    #[arg(long)]
    pub reference: Option<String>,
    #[arg(long)]
    pub claimed_surname: Option<String>,
    #[arg(long)]
    pub claimed_given_names: Option<String>,
    /// YYYY-MM-DD.
    #[arg(long)]
    pub claimed_birth_date: Option<String>,
    /// A sandbox script (JSON), for a test key on sandbox agents.
    #[arg(long)]
    pub sandbox: Option<String>,
    /// The liveness challenge (`kyc challenge`) the selfie frames answer.
    #[arg(long)]
    pub challenge: Option<String>,
    /// The events as NDJSON on stdout instead of the live view.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DocumentKind {
    Passport,
    IdCard,
    DrivingLicence,
}

impl DocumentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passport => "passport",
            Self::IdCard => "id_card",
            Self::DrivingLicence => "driving_licence",
        }
    }
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// Your sessions, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        decision: Option<String>,
        #[arg(long)]
        reference: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// One JSON object per session instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A session, as JSON.
    Get {
        #[arg(value_parser = session_id)]
        id: String,
    },
    /// A session's events as NDJSON, live until it completes.
    Events {
        #[arg(value_parser = session_id)]
        id: String,
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Erases a completed session's images and personal data.
    Erase {
        #[arg(value_parser = session_id)]
        id: String,
    },
}

/// A session id as the service makes them (a UUID), checked here so that whatever is typed
/// cannot turn into another path.
fn session_id(text: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(text)
        .map(|id| id.to_string())
        .map_err(|_| format!("`{text}` is not a session id (a UUID, as `kyc sessions list` shows)"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(key) = cli.key else {
        eprintln!("kyc: no API key: set KYC_API_KEY or pass --key");
        return ExitCode::from(2);
    };
    let client = match Client::new(&cli.url, &key) {
        Ok(client) => client,
        Err(failure) => return fail(failure),
    };
    let outcome = match cli.command {
        Command::Verify(args) => verify::run(&client, args).await,
        Command::Sessions(command) => sessions(&client, command).await.map(|()| 0),
        Command::Reviews(command) => reviews(&client, command).await.map(|()| 0),
        Command::Challenge { json } => challenge(&client, json).await.map(|()| 0),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failure) => fail(failure),
    }
}

async fn challenge(client: &Client, json: bool) -> Result<(), Failure> {
    let issued = client
        .post_json("/v1/liveness/challenges", &serde_json::json!({}))
        .await?;
    if json {
        println!("{issued}");
    } else {
        let text = |key: &str| issued[key].as_str().unwrap_or("?").to_owned();
        let steps: Vec<&str> = issued["steps"]
            .as_array()
            .map(|steps| steps.iter().filter_map(|s| s.as_str()).collect())
            .unwrap_or_default();
        println!("challenge  {}", text("id"));
        println!(
            "steps      {} (from the applicant's point of view)",
            steps.join(", ")
        );
        println!("expires    {}", text("expires_at"));
    }
    Ok(())
}

fn fail(failure: Failure) -> ExitCode {
    eprintln!("kyc: {failure}");
    ExitCode::FAILURE
}

async fn sessions(client: &Client, command: SessionsCommand) -> Result<(), Failure> {
    match command {
        SessionsCommand::List {
            status,
            decision,
            reference,
            limit,
            json,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            for (name, value) in [
                ("status", status),
                ("decision", decision),
                ("reference", reference),
            ] {
                if let Some(value) = value {
                    query.push((name, value));
                }
            }
            let page = client.get_json("/v1/sessions", &query).await?;
            let items = page["data"].as_array().cloned().unwrap_or_default();
            if json {
                for item in &items {
                    view::say(item);
                }
            } else {
                view::session_table(&items);
            }
            Ok(())
        }
        SessionsCommand::Get { id } => {
            let session = client.get_json(&format!("/v1/sessions/{id}"), &[]).await?;
            view::say(serde_json::to_string_pretty(&session).expect("JSON prints"));
            Ok(())
        }
        SessionsCommand::Events { id, after } => {
            let mut out = view::Raw;
            verify::follow(client, &id, after, &mut out)
                .await
                .map(|_| ())
        }
        SessionsCommand::Erase { id } => {
            client.delete(&format!("/v1/sessions/{id}")).await?;
            eprintln!("erased {id}: its images and personal data are gone, its decision stays");
            Ok(())
        }
    }
}

async fn reviews(client: &Client, command: ReviewsCommand) -> Result<(), Failure> {
    match command {
        ReviewsCommand::List {
            status,
            limit,
            json,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(status) = status {
                query.push(("status", status));
            }
            let page = client.get_json("/v1/reviews", &query).await?;
            let items = page["data"].as_array().cloned().unwrap_or_default();
            if json {
                for item in &items {
                    view::say(item);
                }
            } else {
                view::review_table(&items);
            }
            Ok(())
        }
        ReviewsCommand::Decide {
            id,
            decision,
            reasons,
            note,
        } => {
            let decision = match decision {
                Verdict::Approved => "approved",
                Verdict::Declined => "declined",
            };
            let body =
                serde_json::json!({ "decision": decision, "reasons": reasons, "note": note });
            let session = client
                .post_json(&format!("/v1/sessions/{id}/review"), &body)
                .await?;
            view::say(serde_json::to_string_pretty(&session).expect("JSON prints"));
            Ok(())
        }
    }
}
