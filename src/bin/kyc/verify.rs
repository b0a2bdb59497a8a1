//! `kyc verify`: the session posted as a multipart form, its event stream followed to the
//! decision. When the connection breaks mid-stream the events are read again from the last one
//! seen (`?after=`), with a bounded number of tries.

use std::time::Duration;

use futures::StreamExt;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use super::VerifyArgs;
use super::client::{Client, Failure, describe};
use super::view::{self, Sink};

/// Tries to pick a broken stream up again, the waits doubling from 250 ms to 4 s (about 20 s in
/// all): long enough for a load balancer to move to another instance, short enough that a
/// user is not left waiting on a service that is gone.
const RESUMES: u32 = 8;

/// The exit status of a decision.
fn exit_code(decision: &str) -> u8 {
    match decision {
        "approved" => 0,
        "declined" => 4,
        _ => 3,
    }
}

pub async fn run(client: &Client, args: VerifyArgs) -> Result<u8, Failure> {
    let form = form(&args).await?;
    let mut sink: Box<dyn Sink> = if args.json {
        Box::new(view::Raw)
    } else {
        view::for_terminal()
    };
    let response = client.start(form).await?;
    let mut progress = Progress::default();
    let decision = match read(response, &mut progress, sink.as_mut()).await {
        Ok(Some(decision)) => decision,
        Ok(None) | Err(_) => resume(client, &mut progress, sink.as_mut()).await?,
    };
    Ok(exit_code(&decision))
}

/// `kyc sessions events`: the events of `id` after `after`, to `sink`.
pub async fn follow(
    client: &Client,
    id: &str,
    after: u64,
    sink: &mut dyn Sink,
) -> Result<String, Failure> {
    let mut progress = Progress {
        session: Some(id.to_owned()),
        last_seq: after,
        decision: None,
    };
    let response = client.events(id, after).await?;
    match read(response, &mut progress, sink).await {
        Ok(Some(decision)) => Ok(decision),
        Ok(None) | Err(_) => resume(client, &mut progress, sink).await,
    }
}

#[derive(Default)]
struct Progress {
    session: Option<String>,
    last_seq: u64,
    /// The session's decision, once an event has said it is complete: `session.completed`'s,
    /// or a review's.
    decision: Option<String>,
}

/// Follows the session again from its last event seen, until it completes or the tries run out.
async fn resume(
    client: &Client,
    progress: &mut Progress,
    sink: &mut dyn Sink,
) -> Result<String, Failure> {
    let Some(id) = progress.session.clone() else {
        return Err(Failure::Stream(
            "the connection broke before the session's first event; nothing was started, or \
             check `kyc sessions list`"
                .into(),
        ));
    };
    let mut tries = 0;
    loop {
        if tries == RESUMES {
            return Err(Failure::Stream(format!(
                "the event stream of session {id} broke after event {} and did not come back; \
                 follow it later with `kyc sessions events {id} --after {}`",
                progress.last_seq, progress.last_seq
            )));
        }
        sink.notice(&format!(
            "connection lost after event {}; reading on from there",
            progress.last_seq
        ));
        tokio::time::sleep(Duration::from_millis(250 << tries.min(4))).await;
        tries += 1;
        let before = progress.last_seq;
        let response = match client.events(&id, progress.last_seq).await {
            Ok(response) => response,
            Err(Failure::Connect(_)) => continue,
            Err(other) => return Err(other),
        };
        if let Ok(Some(decision)) = read(response, progress, sink).await {
            return Ok(decision);
        }
        if progress.last_seq > before {
            tries = 0;
        }
    }
}

/// Reads events to the end of the stream: the session's decision if it has completed (`None`
/// when the stream ended before), or a broken connection (`Err`).
async fn read(
    response: reqwest::Response,
    progress: &mut Progress,
    sink: &mut dyn Sink,
) -> Result<Option<String>, String> {
    let mut body = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(describe)?;
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let seq = event["seq"].as_u64().unwrap_or(0);
            if seq <= progress.last_seq && progress.session.is_some() {
                continue;
            }
            progress.last_seq = seq;
            if progress.session.is_none() {
                progress.session = event["session_id"].as_str().map(str::to_owned);
            }
            sink.event(
                &event,
                std::str::from_utf8(&line).unwrap_or_default().trim_end(),
            );
            // A review's events follow `session.completed`: the stream ends after them.
            match event["type"].as_str().unwrap_or_default() {
                "session.completed" | "review.resolved" => {
                    progress.decision = event["decision"].as_str().map(str::to_owned);
                }
                kind if kind.starts_with("review.") && progress.decision.is_none() => {
                    progress.decision = Some("review".to_owned());
                }
                _ => {}
            }
        }
    }
    if progress.decision.is_some() {
        sink.finish();
    }
    Ok(progress.decision.clone())
}

/// The request: file parts and the rest as the `metadata` part.
async fn form(args: &VerifyArgs) -> Result<Form, Failure> {
    let mut metadata = json!({});
    if let Some(reference) = &args.reference {
        metadata["reference"] = json!(reference);
    }
    if let Some(kind) = args.kind {
        metadata["document"] = json!({ "type": kind.as_str() });
    }
    let mut claimed = serde_json::Map::new();
    for (field, value) in [
        ("surname", &args.claimed_surname),
        ("given_names", &args.claimed_given_names),
        ("date_of_birth", &args.claimed_birth_date),
    ] {
        if let Some(value) = value {
            claimed.insert(field.into(), json!(value));
        }
    }
    if !claimed.is_empty() {
        metadata["claimed"] = Value::Object(claimed);
    }
    if let Some(script) = &args.sandbox {
        let script: Value = serde_json::from_str(script)
            .map_err(|e| Failure::Input(format!("--sandbox is not JSON: {e}")))?;
        metadata["sandbox"] = script;
    }
    if let Some(challenge) = &args.challenge {
        metadata["challenge_id"] = json!(challenge);
    }
    let mut form = Form::new().text("metadata", metadata.to_string());
    form = form.part("document_front", file(&args.document).await?);
    if let Some(back) = &args.back {
        form = form.part("document_back", file(back).await?);
    }
    for frame in &args.selfie {
        form = form.part("selfie", file(frame).await?);
    }
    Ok(form)
}

async fn file(path: &std::path::Path) -> Result<Part, Failure> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    Ok(Part::bytes(bytes).file_name(name))
}
