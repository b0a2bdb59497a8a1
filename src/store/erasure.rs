//! What erasure removes. Agents put every personal field they read (names, numbers, dates, MRZ
//! text, embeddings) in a check's `extracted`, and nowhere else; erasing a session removes
//! `extracted` from its checks and from its `session.completed` event. Decisions, reason codes,
//! scores, timings and model details stay, so the decision can still be explained.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::domain::CheckResult;

/// Removes the extracted personal fields of every check.
pub fn scrub_checks(checks: &mut BTreeMap<String, CheckResult>) {
    for check in checks.values_mut() {
        check.extracted = None;
    }
}

/// The terminal event's line without any check's `extracted`; other lines come back unchanged.
pub(crate) fn scrub_line(line: &Bytes) -> Bytes {
    let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(line) else {
        return line.clone();
    };
    let Some(checks) = event.get_mut("checks").and_then(|c| c.as_object_mut()) else {
        return line.clone();
    };
    let mut changed = false;
    for check in checks.values_mut() {
        if let Some(check) = check.as_object_mut() {
            changed |= check.remove("extracted").is_some();
        }
    }
    if !changed {
        return line.clone();
    }
    let mut scrubbed = serde_json::to_vec(&event).expect("a parsed line serialises");
    scrubbed.push(b'\n');
    scrubbed.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_extracted_fields_leave_the_terminal_line() {
        let line = Bytes::from_static(
            b"{\"seq\":9,\"type\":\"session.completed\",\"decision\":\"approved\",\
              \"checks\":{\"ocr\":{\"status\":\"passed\",\"score\":0.9,\
              \"extracted\":{\"surname\":\"DOE\"}},\"liveness\":{\"status\":\"passed\"}}}\n",
        );
        let scrubbed = scrub_line(&line);
        assert_eq!(
            std::str::from_utf8(&scrubbed).unwrap(),
            "{\"seq\":9,\"type\":\"session.completed\",\"decision\":\"approved\",\
             \"checks\":{\"ocr\":{\"status\":\"passed\",\"score\":0.9},\
             \"liveness\":{\"status\":\"passed\"}}}\n"
        );
        let plain = Bytes::from_static(b"{\"seq\":1,\"type\":\"agent.started\"}\n");
        assert_eq!(scrub_line(&plain), plain);
    }
}
