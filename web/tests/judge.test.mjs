// The console's reading of a check's measures against its thresholds.

import assert from "node:assert/strict";
import { test } from "node:test";

import { judged, poses } from "../judge.js";

test("a measure is read against its min_ or max_ threshold, nested or not", () => {
  const lines = judged({
    measures: { sharpness: 87.25, exposure: { mean: 120, dark_fraction: 0.6 }, glare_fraction: 0.01 },
    thresholds: { min_sharpness: 100, min_brightness: 70, max_dark_fraction: 0.5, max_glare_fraction: 0.04 },
    models: { face_detector: "x" },
  });
  assert.deepEqual(lines, [
    "measures sharpness 87.25: at least 100 needed, not met",
    "measures exposure mean 120: at least 70 needed, met",
    "measures exposure dark fraction 0.6: at most 0.5 allowed, not met",
    "measures glare fraction 0.01: at most 0.04 allowed, met",
  ]);
});

test("a face distance is read against both of face_match's distances", () => {
  const thresholds = { match_distance: 0.5, mismatch_distance: 0.6 };
  assert.match(judged({ distance: 0.41, thresholds }).at(-1), /read as the same person$/);
  assert.match(judged({ distance: 0.55, thresholds }).at(-1), /read as too close to call$/);
  assert.match(judged({ distance: 0.6, thresholds }).at(-1), /read as different people$/);
});

test("details without thresholds (a sandbox agent's) read as nothing", () => {
  assert.deepEqual(judged({ sandbox: true }), []);
  assert.deepEqual(judged(undefined), []);
});

test("ocr's check digits read one by one, with the expiry", () => {
  const lines = judged({
    thresholds: { min_line_confidence: 0.5 },
    checks: { document_number: true, date_of_birth: false, personal_number: null },
    check_digits_valid: false,
    expired: true,
  });
  assert.deepEqual(lines, [
    "check digits: document number held, date of birth did not hold, personal number not on this document",
    "date of expiry: passed, the document has expired",
  ]);
});

test("a challenge reads as the steps asked against the steps made, frame by frame", () => {
  const details = {
    thresholds: { min_turn_degrees: 15 },
    challenge: {
      steps: ["turn_left", "look_up"],
      made: [{ step: "turn_left", frame: 3, degrees: 24.14, parallax: 0.2, flat: 0.1 }],
      followed: false,
      frames: [
        { index: 0, yaw: 0.5, pitch: -1, roll: 0, label: "start" },
        { index: 3, yaw: 24.14, pitch: 0, roll: 1.2, label: { step: "turn_left" } },
        { index: 4, yaw: null, pitch: null, roll: null, label: "unknown" },
      ],
    },
  };
  assert.ok(
    judged(details).includes("challenge: asked turn left, then look up; made turn left at frame 3 (24.14°); not followed"),
    judged(details).join("\n"),
  );
  assert.deepEqual(poses(details), [
    { frame: 0, yaw: "0.5°", pitch: "-1°", roll: "0°", "read as": "start" },
    { frame: 3, yaw: "24.14°", pitch: "0°", roll: "1.2°", "read as": "turn left" },
    { frame: 4, yaw: "", pitch: "", roll: "", "read as": "unknown" },
  ]);
  assert.deepEqual(poses({ thresholds: {} }), []);
});
