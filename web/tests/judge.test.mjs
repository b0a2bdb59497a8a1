// The console's reading of a check's measures against its thresholds.

import assert from "node:assert/strict";
import { test } from "node:test";

import { judged } from "../judge.js";

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
