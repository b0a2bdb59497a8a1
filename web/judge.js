// A check's measures read against the thresholds it was decided by, in words: what the console
// shows a reviewer before the raw figures. Every real agent records its settings as
// `details.thresholds`; a measure `x` is held to `min_x` or `max_x` there. ocr's check digits
// and liveness's challenge are read out too, and the head pose of every selfie frame.

// Measures whose threshold has another name.
const ALIASES = { mean: "brightness" };

function figure(value) {
  return Number.isInteger(value) ? String(value) : String(Number(value.toFixed(4)));
}

function words(path) {
  return path.join(" ").replaceAll("_", " ");
}

/** Lines such as "sharpness 87.2: at least 100 needed, not met". */
export function judged(details) {
  const thresholds = details?.thresholds;
  if (!thresholds || typeof thresholds !== "object") {
    return [];
  }
  const lines = [];
  const walk = (object, path) => {
    for (const [name, value] of Object.entries(object)) {
      if (path.length === 0 && (name === "thresholds" || name === "models")) {
        continue;
      }
      if (typeof value === "number") {
        const key = ALIASES[name] ?? name;
        const min = thresholds[`min_${key}`];
        const max = thresholds[`max_${key}`];
        const label = words([...path, name]);
        if (typeof min === "number") {
          lines.push(`${label} ${figure(value)}: at least ${figure(min)} needed, ${value >= min ? "met" : "not met"}`);
        }
        if (typeof max === "number") {
          lines.push(`${label} ${figure(value)}: at most ${figure(max)} allowed, ${value <= max ? "met" : "not met"}`);
        }
      } else if (value && typeof value === "object" && !Array.isArray(value)) {
        walk(value, [...path, name]);
      }
    }
  };
  walk(details, []);
  lines.push(...checkDigits(details), ...challenge(details));
  const { match_distance: match, mismatch_distance: mismatch } = thresholds;
  if (typeof details.distance === "number" && typeof match === "number" && typeof mismatch === "number") {
    const d = details.distance;
    const verdict = d < match ? "the same person" : d >= mismatch ? "different people" : "too close to call";
    lines.push(
      `face distance ${figure(d)}: the same person below ${figure(match)}, different people from ${figure(mismatch)}; read as ${verdict}`,
    );
  }
  return lines;
}

/** ocr's check digits, each as held, not held, or absent from the document's format. */
function checkDigits(details) {
  const checks = details.checks;
  if (typeof details.check_digits_valid !== "boolean" || !checks || typeof checks !== "object") {
    return [];
  }
  const held = (value) => (value === true ? "held" : value === false ? "did not hold" : "not on this document");
  const lines = [`check digits: ${Object.entries(checks).map(([name, value]) => `${words([name])} ${held(value)}`).join(", ")}`];
  if (typeof details.expired === "boolean") {
    lines.push(`date of expiry: ${details.expired ? "passed, the document has expired" : "not passed"}`);
  }
  return lines;
}

function step(value) {
  return words([String(value)]);
}

/** What a frame's pose was read as: the start, a step, between the two, or unknown. */
function label(value) {
  if (value && typeof value === "object" && "step" in value) {
    return step(value.step);
  }
  return step(value);
}

/** liveness's challenge: the steps asked against the steps the frames made. */
function challenge(details) {
  const answered = details.challenge;
  if (!answered || !Array.isArray(answered.steps)) {
    return [];
  }
  const made = (answered.made ?? []).map((m) => `${step(m.step)} at frame ${m.frame} (${figure(m.degrees)}°)`);
  return [
    `challenge: asked ${answered.steps.map(step).join(", then ")}; made ${made.length ? made.join(", then ") : "no step"}; ${answered.followed ? "followed" : "not followed"}`,
  ];
}

/** The head pose of each selfie frame, as read against the first, for a table. */
export function poses(details) {
  const frames = details?.challenge?.frames;
  if (!Array.isArray(frames)) {
    return [];
  }
  const degrees = (value) => (typeof value === "number" ? `${figure(value)}°` : "");
  return frames.map((frame) => ({
    frame: frame.index,
    yaw: degrees(frame.yaw),
    pitch: degrees(frame.pitch),
    roll: degrees(frame.roll),
    "read as": label(frame.label),
  }));
}
