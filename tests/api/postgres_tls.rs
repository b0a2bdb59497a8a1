//! PostgreSQL over TLS, as managed databases require it: a server of the test's own (Debian's
//! PostgreSQL binaries, `initdb` into a temporary directory, on a free port) with a certificate
//! the test makes, signed by a CA of its own. The service connects with `sslmode=verify-full`
//! and that CA, runs a session and reads it back; with another CA it refuses to start, naming
//! the store; `sslmode=require` encrypts without checking the certificate.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::json;

use crate::helpers::{completion, session_body, spawn_app_with};

/// The directory of the newest installed PostgreSQL server's binaries.
fn server_binaries() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
    });
    found.pop()
}

/// A CA and a server certificate for `localhost` and 127.0.0.1 signed by it: (CA, cert, key).
fn certificates() -> (String, String, String) {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), server.pem(), key.serialize_pem())
}

/// Runs `program` as the `postgres` user when this process is root (initdb refuses root).
fn as_server_user(program: &Path) -> Command {
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A running private server; stopped when dropped.
struct TlsServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start(bin: PathBuf, cert: &str, key: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // The server's user must own its directory.
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let status = as_server_user(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(status.status.success(), "initdb: {status:?}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(data.join("server.crt"), cert).unwrap();
        std::fs::write(data.join("server.key"), key).unwrap();
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             ssl = on\nfsync = off\n",
            data.display()
        ));
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        // TCP only with TLS: a plain connection is refused, so the test sees TLS used.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let _ = Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key"))
            .status();
        let started = as_server_user(&bin.join("pg_ctl"))
            .args(["-w", "-l"])
            .arg(dir.path().join("server.log"))
            .arg("-D")
            .arg(&data)
            .arg("start")
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "pg_ctl start: {started:?} {}",
            std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
        );
        Self {
            bin,
            data,
            port,
            _dir: dir,
        }
    }

    fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = as_server_user(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reaches_postgresql_over_verified_tls() {
    let Some(bin) = server_binaries() else {
        eprintln!(
            "skipped: no PostgreSQL server binaries under /usr/lib/postgresql \
             (scripts/postgres.sh installs them)"
        );
        return;
    };
    let (ca, cert, key) = certificates();
    let server = TlsServer::start(bin, &cert, &key);
    let certs = tempfile::tempdir().unwrap();
    let ca_file = certs.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let (other_ca, _, _) = certificates();
    let other_file = certs.path().join("other.pem");
    std::fs::write(&other_file, &other_ca).unwrap();
    let blobs = certs.path().join("blobs");

    let verified = server.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    ));
    let app = spawn_app_with(|s| {
        s.store.url = verified.clone();
        s.store.blob_dir = blobs.clone();
    })
    .await;
    let events = app.stream_session(&session_body(json!({}))).await;
    let id = completion(&events)["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let session: serde_json::Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(
        session["decision"], "approved",
        "stored and read back over TLS"
    );

    let mut settings = kyc_orchestrator::Settings::sandbox();
    settings.server.port = 0;
    settings.metrics.listen = String::new();
    settings.store.url = server.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other_file.display()
    ));
    settings.store.blob_dir = blobs.clone();
    let refused = kyc_orchestrator::Application::build(settings).await;
    let error = refused
        .err()
        .expect("a certificate from another CA is refused");
    let chain = kyc_orchestrator::telemetry::ErrorChain(&error).to_string();
    assert!(
        chain.contains("session store") && chain.contains("invalid peer certificate"),
        "{chain}"
    );

    let mut settings = kyc_orchestrator::Settings::sandbox();
    settings.server.port = 0;
    settings.metrics.listen = String::new();
    settings.store.url = server.url("sslmode=require");
    settings.store.blob_dir = blobs;
    assert!(
        kyc_orchestrator::Application::build(settings).await.is_ok(),
        "require: encrypted, the certificate not checked"
    );
}
