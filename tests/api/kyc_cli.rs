//! `kyc`, the command-line client, end to end against the service: the exit status of each
//! decision, plain lines without a terminal and a live view with one (through `script`'s
//! pseudo-terminal), errors on stderr, and a stream cut mid-session picked up again.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{TcpProxy, TestApp, jpeg, png, spawn_app};

/// A document and a selfie frame on disk.
struct Images {
    _dir: tempfile::TempDir,
    document: PathBuf,
    selfie: PathBuf,
}

fn images() -> Images {
    let dir = tempfile::tempdir().unwrap();
    let document = dir.path().join("document.png");
    let selfie = dir.path().join("selfie.jpg");
    std::fs::write(&document, png(96, 64)).unwrap();
    std::fs::write(&selfie, jpeg(64, 64)).unwrap();
    Images {
        _dir: dir,
        document,
        selfie,
    }
}

fn kyc(url: &str, key: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kyc"));
    command
        .env("KYC_URL", url)
        .env("KYC_API_KEY", key)
        .env_remove("NO_COLOR");
    command
}

fn verify_args<'a>(images: &'a Images, script: &'a str) -> Vec<&'a str> {
    vec![
        "verify",
        "--document",
        images.document.to_str().unwrap(),
        "--selfie",
        images.selfie.to_str().unwrap(),
        "--type",
        "passport",
        "--sandbox",
        script,
    ]
}

async fn verify(app: &TestApp, images: &Images, script: Value, json: bool) -> Output {
    let script = script.to_string();
    let mut args = verify_args(images, &script);
    if json {
        args.push("--json");
    }
    kyc(&app.address, app.key.expose())
        .args(&args)
        .output()
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_exits_with_the_decision_and_prints_plain_lines_without_a_terminal() {
    let app = spawn_app().await;
    let images = images();

    let approved = verify(&app, &images, json!({}), false).await;
    let declined = verify(
        &app,
        &images,
        json!({ "liveness": { "result": "fail" } }),
        false,
    )
    .await;
    let review = verify(
        &app,
        &images,
        json!({ "doc_capture": { "result": "fail", "reason": "too_blurry" } }),
        false,
    )
    .await;

    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        text(&approved.stderr)
    );
    assert_eq!(declined.status.code(), Some(4));
    assert_eq!(review.status.code(), Some(3));
    let shown = text(&approved.stdout);
    assert!(shown.contains("decision: approved"), "{shown}");
    for agent in ["liveness", "doc_capture", "ocr", "face_match"] {
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with(agent) && l.contains("passed")),
            "{agent} in {shown}"
        );
    }
    assert!(
        !shown.contains('\u{1b}'),
        "no escape codes in a pipe: {shown:?}"
    );
    assert!(text(&declined.stdout).contains("liveness_failed"));
    assert!(text(&review.stdout).contains("too_blurry"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_json_prints_the_events_and_sessions_commands_read_them_back() {
    let app = spawn_app().await;
    let images = images();

    let streamed = verify(&app, &images, json!({}), true).await;
    let events: Vec<Value> = text(&streamed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let id = events[0]["session_id"].as_str().unwrap().to_owned();
    let run = |args: Vec<String>| kyc(&app.address, app.key.expose()).args(args).output();
    let got = run(vec!["sessions".into(), "get".into(), id.clone()])
        .await
        .unwrap();
    let replay = run(vec!["sessions".into(), "events".into(), id.clone()])
        .await
        .unwrap();
    let listed = run(vec!["sessions".into(), "list".into()]).await.unwrap();
    let erased = run(vec!["sessions".into(), "erase".into(), id.clone()])
        .await
        .unwrap();

    assert_eq!(streamed.status.code(), Some(0));
    assert_eq!(events.last().unwrap()["type"], "session.completed");
    let session: Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(session["decision"], "approved");
    assert_eq!(text(&replay.stdout), text(&streamed.stdout));
    assert!(
        text(&listed.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .starts_with(&id)
    );
    assert!(erased.status.success(), "{}", text(&erased.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_go_to_stderr_with_the_services_detail_and_never_the_key() {
    let app = spawn_app().await;
    let images = images();
    let wrong = kyc_orchestrator::auth::ApiKey::generate(kyc_orchestrator::domain::Mode::Test);

    let refused = kyc(&app.address, wrong.expose())
        .args(verify_args(&images, "{}"))
        .output()
        .await
        .unwrap();
    let missing_file = kyc(&app.address, app.key.expose())
        .args([
            "verify",
            "--document",
            "/nowhere.png",
            "--selfie",
            "/nowhere.jpg",
        ])
        .output()
        .await
        .unwrap();
    let no_key = tokio::process::Command::new(env!("CARGO_BIN_EXE_kyc"))
        .env_remove("KYC_API_KEY")
        .args(["sessions", "list"])
        .output()
        .await
        .unwrap();
    let not_an_id = kyc(&app.address, app.key.expose())
        .args(["sessions", "get", "../keys"])
        .output()
        .await
        .unwrap();
    let unreachable = kyc("http://127.0.0.1:9", app.key.expose())
        .args(["sessions", "list"])
        .output()
        .await
        .unwrap();

    assert_eq!(refused.status.code(), Some(1));
    let said = text(&refused.stderr);
    assert!(
        said.contains("answered 401") && said.contains("unknown"),
        "{said}"
    );
    assert_eq!(missing_file.status.code(), Some(1));
    assert!(text(&missing_file.stderr).contains("cannot read /nowhere.png"));
    assert_eq!(no_key.status.code(), Some(2));
    assert_eq!(not_an_id.status.code(), Some(2), "bad usage");
    assert!(text(&not_an_id.stderr).contains("not a session id"));
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(text(&unreachable.stderr).contains("cannot reach the service"));
    for output in [&refused, &missing_file, &unreachable] {
        let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
        for key in [wrong.expose(), app.key.expose()] {
            assert!(!all.contains(&key["kyc_test_".len()..]), "a key printed");
        }
    }
}

/// `script` (util-linux) runs `kyc` on a pseudo-terminal and records what it drew.
async fn on_a_terminal(app: &TestApp, images: &Images, no_color: bool) -> String {
    let script = r#"{"ocr": {"latency_ms": 600}}"#;
    let command: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_kyc").to_owned())
        .chain(
            verify_args(images, script)
                .into_iter()
                .map(|a| format!("'{a}'")),
        )
        .collect();
    let mut run = tokio::process::Command::new("script");
    run.args(["-qec", &command.join(" "), "/dev/null"])
        .env("KYC_URL", &app.address)
        .env("KYC_API_KEY", app.key.expose())
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR");
    if no_color {
        run.env("NO_COLOR", "1");
    }
    let output = run.output().await.unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_view_is_redrawn_live_in_colour_unless_no_color() {
    if !Path::new("/usr/bin/script").exists() {
        println!("skipped: no `script` (util-linux) to make a pseudo-terminal with");
        return;
    }
    let app = spawn_app().await;
    let images = images();

    let coloured = on_a_terminal(&app, &images, false).await;
    let plain = on_a_terminal(&app, &images, true).await;

    assert!(
        coloured.contains("running"),
        "a spinner while ocr runs: {coloured:?}"
    );
    assert!(
        coloured.contains("\u{1b}[2K") || coloured.contains("\u{1b}[1A"),
        "redrawn in place"
    );
    assert!(coloured.contains("\u{1b}[32m"), "passed in green");
    assert!(coloured.contains("decision: "));
    assert!(
        plain.contains("\u{1b}[2K") || plain.contains("\u{1b}[1A"),
        "still live"
    );
    assert!(!plain.contains("\u{1b}[32m"), "NO_COLOR: no colour");
}

/// The connection to the service is cut while the session runs and restored once `kyc` says so:
/// it reads on from the last event it saw, and shows every agent once. ocr is scripted to take
/// 3 s, so the cut (made the moment `kyc` shows ocr running) lands before the session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_session_is_picked_up_again_from_the_last_event() {
    let app = spawn_app().await;
    let images = images();
    let proxy = TcpProxy::start(app.address.trim_start_matches("http://")).await;
    let script = json!({ "ocr": { "latency_ms": 3000 } }).to_string();
    let mut child = kyc(&format!("http://{}", proxy.address()), app.key.expose())
        .args(verify_args(&images, &script))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();

    loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("kyc prints until it ends");
        let started = line.starts_with("ocr") && line.contains("running");
        seen.push(line);
        if started {
            break;
        }
    }
    proxy.cut();
    loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("kyc says the connection was lost");
        let lost = line.contains("connection lost");
        seen.push(line);
        if lost {
            break;
        }
    }
    proxy.restore();
    while let Some(line) = lines.next_line().await.unwrap() {
        seen.push(line);
    }
    let status = child.wait().await.unwrap();

    assert_eq!(status.code(), Some(0), "{seen:#?}");
    assert_eq!(
        seen.last().map(|l| l.starts_with("decision: approved")),
        Some(true)
    );
    for agent in ["liveness", "doc_capture", "ocr", "face_match"] {
        let results = seen
            .iter()
            .filter(|l| l.starts_with(agent) && l.contains("passed"))
            .count();
        assert_eq!(results, 1, "{agent} once in {seen:#?}");
    }
}

/// `kyc sessions list | head -1`: once the reader has gone, the rest is not written, and `kyc`
/// ends quietly instead of panicking on the broken pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_ends_the_output_quietly() {
    let app = spawn_app().await;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);

    let output = kyc(&app.address, app.key.expose())
        .args(["sessions", "list"])
        .stdout(writer)
        .output()
        .await
        .unwrap();

    assert_eq!(output.status.code(), Some(0));
    assert!(output.stderr.is_empty(), "{}", text(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_works_the_queue_from_the_terminal() {
    let app = spawn_app().await;
    let images = images();
    let review = json!({ "doc_capture": { "result": "fail", "reason": "too_blurry" } });
    let streamed = verify(&app, &images, review, true).await;
    assert_eq!(streamed.status.code(), Some(3), "review");
    let events: Vec<Value> = text(&streamed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let id = events[0]["session_id"].as_str().unwrap().to_owned();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["session.completed", "review.opened"],
        "the stream ends with the case it opened"
    );
    let completed = events[events.len() - 2]["seq"].as_u64().unwrap();
    let run = |args: &[&str]| kyc(&app.address, app.key.expose()).args(args).output();

    let queue = run(&["reviews", "list"]).await.unwrap();
    let lines: Vec<String> = text(&queue.stdout).lines().map(str::to_owned).collect();
    assert!(lines[0].starts_with("SESSION"), "{lines:?}");
    assert!(
        lines[1].starts_with(&id) && lines[1].contains("open") && lines[1].ends_with("too_blurry"),
        "{lines:?}"
    );
    let refused = run(&[
        "reviews",
        "decide",
        &id,
        "--decision",
        "approved",
        "--reason",
        "nope",
    ])
    .await
    .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("422"),
        "{}",
        text(&refused.stderr)
    );
    let decided = run(&[
        "reviews",
        "decide",
        &id,
        "--decision",
        "approved",
        "--reason",
        "verified_manually",
        "--note",
        "checked by phone",
    ])
    .await
    .unwrap();
    assert!(decided.status.success(), "{}", text(&decided.stderr));
    let session: Value = serde_json::from_slice(&decided.stdout).unwrap();
    assert_eq!(session["decision"], "approved");
    assert_eq!(session["automated_decision"], "review");

    // The review's events, after the completion, read back to the end of the history.
    let after = completed.to_string();
    let replay = run(&["sessions", "events", &id, "--after", &after])
        .await
        .unwrap();
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    let kinds: Vec<String> = text(&replay.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        ["review.opened", "review.decided", "review.resolved"]
    );
    let empty = run(&["reviews", "list"]).await.unwrap();
    assert_eq!(text(&empty.stdout).lines().count(), 1, "only the header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_from_kyc_challenge_is_answered_once_by_kyc_verify() {
    let app = spawn_app().await;
    let images = images();
    let issued = kyc(&app.address, app.key.expose())
        .args(["challenge", "--json"])
        .output()
        .await
        .unwrap();
    assert_eq!(issued.status.code(), Some(0), "{}", text(&issued.stderr));
    let challenge: Value = serde_json::from_slice(&issued.stdout).unwrap();
    let id = challenge["id"].as_str().unwrap();
    let answer = || {
        let mut args = verify_args(&images, "{}");
        args.extend(["--challenge", id]);
        kyc(&app.address, app.key.expose()).args(args).output()
    };

    let first = answer().await.unwrap();
    let second = answer().await.unwrap();

    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert_eq!(second.status.code(), Some(1));
    assert!(
        text(&second.stderr).contains("challenge_used"),
        "{}",
        text(&second.stderr)
    );
}
