// A check's measures read against the thresholds it was decided by, in words: what the console
// shows a reviewer before the raw figures. Every real agent records its settings as
// `details.thresholds`; a measure `x` is held to `min_x` or `max_x` there.

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
