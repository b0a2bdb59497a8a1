//! What erasure removes. Agents put every personal field they read (names, numbers, dates, MRZ
//! text, embeddings) in a check's `extracted`, and nowhere else; erasing a session removes
//! `extracted` from its checks and from its `session.completed` event. A reviewer's note may
//! name the applicant too: erasing clears it, in the decision and in its `review.decided`
//! event. Decisions, reason codes, scores, timings, model details and who reviewed stay, so the
//! decision can still be explained.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::domain::CheckResult;

/// Removes the extracted personal fields of every check.
pub fn scrub_checks(checks: &mut BTreeMap<String, CheckResult>) {
    for check in checks.values_mut() {
        check.extracted = None;
    }
}

/// An event's line without any check's `extracted` (`session.completed`) and without a note
/// (`review.decided`); other lines come back unchanged.
pub(crate) fn scrub_line(line: &Bytes) -> Bytes {
    let Ok(serde_json::Value::Object(mut event)) = serde_json::from_slice(line) else {
        return line.clone();
    };
    let mut changed = event.remove("note").is_some();
    if let Some(checks) = event.get_mut("checks").and_then(|c| c.as_object_mut()) {
        for check in checks.values_mut() {
            if let Some(check) = check.as_object_mut() {
                changed |= check.remove("extracted").is_some();
            }
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
    fn only_extracted_fields_and_notes_leave_the_lines() {
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
        let decided = Bytes::from_static(
            b"{\"seq\":11,\"type\":\"review.decided\",\"decision\":\"approved\",\
              \"note\":\"spoke to Jane Doe\",\"status\":\"resolved\"}\n",
        );
        assert_eq!(
            std::str::from_utf8(&scrub_line(&decided)).unwrap(),
            "{\"seq\":11,\"type\":\"review.decided\",\"decision\":\"approved\",\
             \"status\":\"resolved\"}\n"
        );
    }
}
