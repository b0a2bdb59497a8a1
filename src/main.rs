//! The server binary: parse the command line, load settings, start telemetry, serve until
//! SIGTERM or ctrl-c.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kyc_orchestrator::admin::{self, KeysCommand};
use kyc_orchestrator::agent_server::AgentServer;
use kyc_orchestrator::telemetry::{self, ErrorChain};
use kyc_orchestrator::{Application, Settings};

// Many small, short-lived allocations on two or more threads: mimalloc's per-thread heaps avoid
// the arena-lock contention glibc's malloc showed under load (see README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Identity-verification orchestrator. With no arguments it serves on its embedded defaults.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML file layered over the defaults (and under KYC__SECTION__KEY variables).
    #[arg(long, env = "KYC_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the API (what no command does too).
    Serve,
    /// Manages API keys in the configured store.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Prints the OpenAPI document the service serves at /openapi.json.
    Openapi {
        /// The agent server's document instead (the remote agent protocol).
        #[arg(long)]
        agent_server: bool,
    },
    /// Serves agents to other instances over HTTP (their agents of kind "http").
    AgentServer {
        /// The agents to serve, by their [agents.NAME]; every configured agent by default.
        #[arg(long, value_delimiter = ',')]
        agents: Vec<String>,
    },
    /// Exits 0 when a running instance answers GET /health with 200, 1 otherwise: the
    /// container's HEALTHCHECK, which needs no other program in the image.
    Health {
        /// The instance (or agent server) to ask.
        #[arg(long, default_value = "http://127.0.0.1:8009")]
        url: String,
        /// Ask GET /health/ready instead: whether to send it new sessions.
        #[arg(long)]
        ready: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi { agent_server }) = cli.command {
        let document = if agent_server {
            kyc_orchestrator::api::agent_server_document()
        } else {
            kyc_orchestrator::api::openapi_document()
        };
        println!(
            "{}",
            document.to_pretty_json().expect("the document serialises")
        );
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Health { url, ready }) = &cli.command {
        return probe(url, *ready).await;
    }
    // Every session stream is a socket; the common soft limit of 1024 is far below what one
    // instance serves, so take what the hard limit allows.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("kyc-orchestrator: {}", ErrorChain(&error));
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Keys { command }) = cli.command {
        return match admin::keys(&settings, command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("kyc-orchestrator keys: {}", ErrorChain(&error));
                ExitCode::FAILURE
            }
        };
    }
    // Log lines go through a buffer drained by its own thread: a slow log pipe must never stall
    // the runtime (it drops lines rather than block). The guard flushes it on exit.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking(std::io::stdout());
    telemetry::init(&settings.telemetry, writer);
    if let Some(Command::AgentServer { agents }) = cli.command {
        return serve_agents(settings, &agents).await;
    }
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "cannot start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %app.local_addr(), "listening");
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "server failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve_agents(settings: Settings, agents: &[String]) -> ExitCode {
    let server = match AgentServer::build(settings, agents).await {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "cannot start the agent server");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        addr = %server.local_addr(),
        agents = %server.agents().join(","),
        "agent server listening"
    );
    server.run_until_stopped(shutdown_signal()).await;
    ExitCode::SUCCESS
}

/// `health`: one GET, bounded to 2 s so that it ends within a HEALTHCHECK's timeout.
async fn probe(url: &str, ready: bool) -> ExitCode {
    let path = if ready { "/health/ready" } else { "/health" };
    let url = format!("{}{path}", url.trim_end_matches('/'));
    let client = kyc_orchestrator::http::client()
        .timeout(std::time::Duration::from_secs(2))
        .build();
    let answer = match client {
        Ok(client) => client.get(&url).send().await,
        Err(error) => Err(error),
    };
    match answer {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!(
                "kyc-orchestrator health: GET {url} answered {}",
                response.status()
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("kyc-orchestrator health: GET {url}: {}", ErrorChain(&error));
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM (what orchestrators send) or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
