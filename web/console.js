// The compliance console: sessions, the review queue, a session's checks, images and audit
// trail, review decisions, erasure, and webhook deliveries, all through the public API with the
// officer's own key.
//
// The key lives in this tab's sessionStorage: never in a URL, a cookie or localStorage. Views
// are chosen by the URL's fragment (#/sessions, #/session/<id>...), which holds ids only.

import { judged, poses } from "./judge.js";
import { readLines } from "./progress.js";

const KEY = "kyc.console.key";

// The reason codes a reviewer may give (GET /v1/reviews/reasons), read once per sign-in.
let reviewReasons = null;

async function reasonsOffered() {
  if (!reviewReasons) {
    const response = await api("/v1/reviews/reasons");
    reviewReasons = response.ok ? (await response.json()).reasons : [];
  }
  return reviewReasons;
}

const VIEWS = ["signin", "sessions", "reviews", "session", "webhooks"];
const $ = (id) => document.getElementById(id);

let imageUrls = [];

function say(text) {
  $("status").textContent = text;
}

function show(view) {
  for (const id of VIEWS) {
    $(id).hidden = id !== view;
  }
  $("nav").hidden = view === "signin";
}

function key() {
  return sessionStorage.getItem(KEY);
}

/** An API call with the officer's key; a 401 signs out. */
async function api(path, init = {}) {
  const headers = new Headers(init.headers);
  headers.set("Authorization", `Bearer ${key()}`);
  const response = await fetch(path, { ...init, headers, cache: "no-store" });
  if (response.status === 401) {
    signOut("Your key was refused (revoked or expired): sign in again.");
    throw new Error("signed out");
  }
  return response;
}

async function problemText(response) {
  try {
    const problem = await response.json();
    const fields = (problem.errors ?? []).map((e) => `${e.field}: ${e.detail}`).join("; ");
    return fields ? `${problem.detail} (${fields})` : problem.detail;
  } catch {
    return `the service answered ${response.status}`;
  }
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function sessionLink(id) {
  const button = el("button", { type: "button", className: "link", textContent: id });
  button.onclick = () => {
    location.hash = `#/session/${id}`;
  };
  return button;
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  reviewReasons = null;
  show("signin");
  say(message ?? "Signed out.");
}

async function signIn(event) {
  event.preventDefault();
  const candidate = $("key").value.trim();
  const response = await fetch("/v1/reviews?limit=1", {
    headers: { Authorization: `Bearer ${candidate}` },
    cache: "no-store",
  });
  if (!response.ok) {
    say(
      response.status === 403
        ? "This key may not read sessions (it needs sessions:read)."
        : "This key was not accepted.",
    );
    return;
  }
  sessionStorage.setItem(KEY, candidate);
  $("key").value = "";
  if (!location.hash || location.hash === "#/") {
    location.hash = "#/reviews";
  } else {
    route();
  }
}

// Sessions: the list with filters, a keyset page at a time.
let sessionCursor = null;

async function listSessions(cursor) {
  show("sessions");
  const query = new URLSearchParams();
  const form = new FormData($("filters"));
  for (const [name, value] of form) {
    if (!value) {
      continue;
    }
    if (name === "created_after") {
      query.set(name, new Date(`${value}T00:00:00`).toISOString());
    } else if (name === "created_before") {
      query.set(name, new Date(`${value}T23:59:59.999`).toISOString());
    } else {
      query.set(name, value);
    }
  }
  query.set("limit", "25");
  if (cursor) {
    query.set("cursor", cursor);
  }
  const response = await api(`/v1/sessions?${query}`);
  if (!response.ok) {
    say(`The list failed: ${await problemText(response)}`);
    return;
  }
  const page = await response.json();
  $("session-rows").replaceChildren(
    ...page.data.map((s) =>
      el(
        "tr",
        {},
        el("td", { textContent: when(s.created_at) }),
        el("td", {}, sessionLink(s.id)),
        el("td", { textContent: s.reference ?? "" }),
        el("td", { textContent: s.review_status ? `${s.status}, review ${s.review_status}` : s.status }),
        el("td", { textContent: s.decision ?? "" }),
        el("td", { textContent: (s.reasons ?? []).join(", ") }),
      ),
    ),
  );
  sessionCursor = page.next_cursor ?? null;
  $("next-page").disabled = !sessionCursor;
  say(`${page.data.length} sessions${sessionCursor ? ", more on the next page" : ""}.`);
}

// The review queue, oldest first.
let reviewCursor = null;

async function listReviews(cursor) {
  show("reviews");
  const query = new URLSearchParams({ limit: "25" });
  if (cursor) {
    query.set("cursor", cursor);
  }
  const response = await api(`/v1/reviews?${query}`);
  if (!response.ok) {
    say(`The queue failed: ${await problemText(response)}`);
    return;
  }
  const page = await response.json();
  $("review-rows").replaceChildren(
    ...page.data.map((c) =>
      el(
        "tr",
        {},
        el("td", { textContent: when(c.opened_at) }),
        el("td", {}, sessionLink(c.session_id)),
        el("td", { textContent: c.reference ?? "" }),
        el("td", { textContent: c.status.replace("_", " ") }),
        el("td", { textContent: c.reasons.join(", ") }),
      ),
    ),
  );
  reviewCursor = page.next_cursor ?? null;
  $("next-reviews").disabled = !reviewCursor;
  say(
    page.data.length
      ? `${page.data.length} sessions wait for a decision.`
      : "Nothing waits for a decision.",
  );
}

/** A value of a check's details, as a person reads it. */
function readable(value) {
  if (value === null || value === undefined) {
    return "";
  }
  if (typeof value === "number") {
    return Number.isInteger(value) ? String(value) : value.toFixed(3);
  }
  if (typeof value === "boolean") {
    return value ? "yes" : "no";
  }
  if (Array.isArray(value)) {
    return value.map(readable).join(", ");
  }
  if (typeof value === "object") {
    return Object.entries(value)
      .map(([k, v]) => `${k.replaceAll("_", " ")}: ${readable(v)}`)
      .join("; ");
  }
  return String(value);
}

function table(object) {
  return el(
    "table",
    {},
    el(
      "tbody",
      {},
      ...Object.entries(object).map(([name, value]) =>
        el(
          "tr",
          {},
          el("th", { scope: "row", textContent: name.replaceAll("_", " ") }),
          el("td", { textContent: readable(value) }),
        ),
      ),
    ),
  );
}

/** The check's measures against its thresholds, in words, where it recorded them. */
function againstThresholds(details) {
  const lines = judged(details);
  if (!lines.length) {
    return [];
  }
  return [
    el("h4", { textContent: "Against its thresholds" }),
    el("ul", {}, ...lines.map((line) => el("li", { textContent: line }))),
  ];
}

/** liveness's reading of each frame's head pose, as a table with a row per frame. */
function poseTable(details) {
  const rows = poses(details);
  if (!rows.length) {
    return [];
  }
  const columns = Object.keys(rows[0]);
  return [
    el("h4", { textContent: "Head pose per frame, against the first" }),
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", { scope: "col", textContent: c })))),
      el(
        "tbody",
        {},
        ...rows.map((row) => el("tr", {}, ...columns.map((c) => el("td", { textContent: String(row[c]) })))),
      ),
    ),
  ];
}

function renderCheck(name, check) {
  const facts = {
    status: check.status,
    score: check.score,
    reasons: check.reasons,
    detail: check.detail,
    "time (ms)": check.duration_ms,
  };
  for (const [k, v] of Object.entries(facts)) {
    if (v === undefined || v === null || (Array.isArray(v) && !v.length)) {
      delete facts[k];
    }
  }
  return el(
    "section",
    { className: "check" },
    el("h3", { textContent: name.replace("_", " ") }),
    table(facts),
    ...againstThresholds(check.details),
    ...poseTable(check.details),
    check.details ? el("h4", { textContent: "Measured" }) : null,
    check.details ? table(check.details) : null,
    check.extracted ? el("h4", { textContent: "Read from the document" }) : null,
    check.extracted ? table(check.extracted) : null,
  );
}

let current = null;
// Bumped by every opening: work for a session the officer has left sees it is stale and stops.
let opened = 0;

async function openSession(id) {
  const view = ++opened;
  show("session");
  current = null;
  for (const url of imageUrls) {
    URL.revokeObjectURL(url);
  }
  imageUrls = [];
  for (const part of ["summary", "audit", "checks", "faces", "images", "timeline"]) {
    $(part).replaceChildren();
  }
  $("images-note").textContent = "";
  $("faces-note").textContent = "";
  $("review-panel").hidden = true;
  $("erase").hidden = true;
  $("erase-confirm").hidden = true;
  $("session-title").textContent = "Session";
  const response = await api(`/v1/sessions/${encodeURIComponent(id)}`);
  if (view !== opened) {
    return;
  }
  if (response.status === 404) {
    say("No such session for your key's tenant.");
    return;
  }
  if (!response.ok) {
    say(`The session failed to load: ${await problemText(response)}`);
    return;
  }
  const s = await response.json();
  if (view !== opened) {
    return;
  }
  current = s;
  $("session-title").textContent = `Session ${s.id}`;
  const facts = [
    ["Decision", s.decision ?? "(running)"],
    ["Reasons", (s.reasons ?? []).join(", ")],
    [
      "Agents decided",
      s.automated_decision
        ? `${s.automated_decision}${s.automated_reasons?.length ? ` (${s.automated_reasons.join(", ")})` : ""}`
        : null,
    ],
    ["Review", s.review ? s.review.status.replace("_", " ") : null],
    ["Reference", s.reference],
    ["Status", s.status],
    ["Created", when(s.created_at)],
    ["Created by key", s.created_by],
    ["Erased", s.erased_at ? `${when(s.erased_at)} by ${s.erased_by ?? "retention"}` : null],
  ].filter(([, v]) => v);
  $("summary").replaceChildren(
    ...facts.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: v })]),
  );
  $("audit").replaceChildren(
    ...(s.review?.decisions ?? []).map((d) =>
      el(
        "li",
        {},
        `${when(d.decided_at)}: ${d.reviewer.label ?? d.reviewer.key_id} (${d.reviewer.key_id}) decided ${d.decision}, ${d.reasons.join(", ")}`,
        d.note ? el("blockquote", { textContent: d.note }) : null,
      ),
    ),
  );
  if (!s.review?.decisions?.length) {
    $("audit").append(el("li", { textContent: "No reviewer has decided this session." }));
  }
  const open = s.review && ["open", "pending_second"].includes(s.review.status);
  $("review-panel").hidden = !open;
  if (open) {
    const reasons = await reasonsOffered();
    if (view !== opened) {
      return;
    }
    $("review-reasons").replaceChildren(...reasons.map((r) => el("option", { value: r, textContent: r })));
    $("review-note").value = "";
  }
  $("checks").replaceChildren(
    ...Object.entries(s.checks ?? {}).map(([name, check]) => renderCheck(name, check)),
  );
  $("erase").hidden = Boolean(s.erased_at) || s.status !== "completed";
  $("erase-confirm").hidden = true;
  say(`Session ${s.id}: ${s.decision ?? s.status}.`);
  await Promise.all([showImages(s, view), showTimeline(s, view)]);
}

async function showImages(s, view) {
  const index = await api(`/v1/sessions/${s.id}/images`);
  if (view !== opened) {
    return;
  }
  if (index.status === 410) {
    $("images-note").textContent = "The images were erased.";
    $("faces-note").textContent = "The images were erased.";
    return;
  }
  if (!index.ok) {
    $("images-note").textContent = "This service keeps no images for this session.";
    $("faces-note").textContent = "This service keeps no images for this session.";
    return;
  }
  $("images-note").textContent = "";
  const { images } = await index.json();
  const urls = new Map();
  for (const name of images) {
    const response = await api(`/v1/sessions/${s.id}/images/${name}`);
    if (!response.ok) {
      continue;
    }
    const blob = await response.blob();
    if (view !== opened) {
      return;
    }
    const url = URL.createObjectURL(blob);
    imageUrls.push(url);
    urls.set(name, url);
    const label = name.replace("document_", "document ").replace("selfie_", "selfie frame ");
    $("images").append(
      el("figure", {}, el("img", { src: url, alt: label }), el("figcaption", { textContent: label })),
    );
  }
  await showFaces(s, urls, view);
}

/**
 * The two faces face_match compared, side by side: the portrait the agents cut out of the
 * document, and the selfie frame it chose, cropped around the face it found there.
 */
async function showFaces(s, urls, view) {
  const figures = [];
  const portrait = urls.get("document_portrait");
  if (portrait) {
    figures.push(
      el(
        "figure",
        {},
        el("img", { src: portrait, alt: "The portrait on the document" }),
        el("figcaption", { textContent: "document portrait" }),
      ),
    );
  }
  const selfie = s.checks?.face_match?.details?.selfie;
  const frame = selfie && urls.get(`selfie_${selfie.frame}`);
  if (frame && selfie.face) {
    try {
      const crop = await faceCrop(frame, selfie.face, `The face in selfie frame ${selfie.frame}`);
      if (view !== opened) {
        return;
      }
      figures.push(el("figure", {}, crop, el("figcaption", { textContent: `selfie frame ${selfie.frame}, face` })));
    } catch {
      // An image the browser cannot draw is still listed below, as sent.
    }
  }
  $("faces").replaceChildren(...figures);
  if (!figures.length) {
    $("faces-note").textContent = "No faces were compared: face_match found none, or did not run.";
  } else if (!portrait) {
    $("faces-note").textContent = "The agents found no portrait on the document to keep.";
  }
}

/** The region of the image at `url` around `face` (pixels of the upright image), drawn. */
async function faceCrop(url, face, label) {
  const image = new Image();
  image.src = url;
  await image.decode();
  const margin = 0.35 * Math.max(face.width, face.height);
  const x = Math.max(0, face.x - margin);
  const y = Math.max(0, face.y - margin);
  const width = Math.min(image.naturalWidth - x, face.width + 2 * margin);
  const height = Math.min(image.naturalHeight - y, face.height + 2 * margin);
  if (!(width > 0 && height > 0)) {
    throw new Error("the face lies outside the image");
  }
  const canvas = el("canvas", { width: Math.round(width), height: Math.round(height) });
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", label);
  canvas.getContext("2d").drawImage(image, x, y, width, height, 0, 0, canvas.width, canvas.height);
  return canvas;
}

function describeEvent(event) {
  switch (event.type) {
    case "agent.completed":
      return `${event.agent}: ${event.status}${event.reasons?.length ? ` (${event.reasons.join(", ")})` : ""}`;
    case "agent.failed":
    case "agent.timed_out":
    case "agent.skipped":
    case "agent.started":
      return `${event.type.replace("agent.", "")}: ${event.agent}`;
    case "session.completed":
      return `completed: ${event.decision} (${event.reasons.join(", ")})`;
    case "review.decided":
      return `${event.reviewer.label ?? event.reviewer.key_id} decided ${event.decision}`;
    case "review.resolved":
      return `review resolved: ${event.decision}`;
    default:
      return event.type;
  }
}

async function showTimeline(s, view) {
  if (s.status !== "completed") {
    return;
  }
  const response = await api(`/v1/sessions/${s.id}/events`);
  if (!response.ok || view !== opened) {
    return;
  }
  await readLines(response, (event) => {
    if (view !== opened) {
      return;
    }
    $("timeline").append(el("li", { textContent: `${when(event.ts)}: ${describeEvent(event)}` }));
  });
}

async function decide(event) {
  event.preventDefault();
  if (!current) {
    return;
  }
  const form = new FormData($("review-form"));
  const body = {
    decision: form.get("decision"),
    reasons: form.getAll("reasons"),
  };
  const note = String(form.get("note") ?? "").trim();
  if (note) {
    body.note = note;
  }
  const response = await api(`/v1/sessions/${current.id}/review`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    say(`The decision was not recorded: ${await problemText(response)}`);
    return;
  }
  await openSession(current.id);
  say(`Your decision (${body.decision}) is recorded.`);
}

async function erase() {
  if (!current) {
    return;
  }
  const response = await api(`/v1/sessions/${current.id}`, { method: "DELETE" });
  if (!response.ok) {
    say(`The erasure failed: ${await problemText(response)}`);
    return;
  }
  await openSession(current.id);
  say("The session's personal data is erased.");
}

async function listWebhooks() {
  show("webhooks");
  const response = await api("/v1/webhooks");
  if (response.status === 403) {
    $("endpoints").replaceChildren(el("p", { textContent: "Your key may not manage webhooks (webhooks:manage)." }));
    return;
  }
  if (!response.ok) {
    say(`The endpoints failed to load: ${await problemText(response)}`);
    return;
  }
  const { data } = await response.json();
  $("endpoints").replaceChildren();
  if (!data.length) {
    $("endpoints").append(el("p", { textContent: "No endpoints." }));
  }
  for (const endpoint of data) {
    const deliveries = await (await api(`/v1/webhooks/${endpoint.id}/deliveries`)).json();
    const rows = deliveries.data.map((d) => {
      const resend = el("button", { type: "button", textContent: "Send again" });
      resend.onclick = guarded(async () => {
        const sent = await api(`/v1/webhooks/${endpoint.id}/deliveries/${d.message_id}/resend`, { method: "POST" });
        say(sent.ok ? `Message ${d.message_id} will be sent again.` : `Not sent again: ${await problemText(sent)}`);
        if (sent.ok) {
          await listWebhooks();
        }
      }, resend);
      const last = d.attempts.at(-1);
      return el(
        "tr",
        {},
        el("td", { textContent: when(d.created_at) }),
        el("td", { textContent: d.type }),
        el("td", { textContent: d.state }),
        el("td", { textContent: last ? `${d.attempts.length}, last ${readable(last)}` : "none" }),
        el("td", {}, resend),
      );
    });
    $("endpoints").append(
      el(
        "section",
        { className: "check" },
        el("h2", { textContent: endpoint.url }),
        el("p", {
          textContent: `${endpoint.enabled ? "enabled" : `disabled (${endpoint.disabled_reason ?? "by you"})`}; events: ${endpoint.events.join(", ")}`,
        }),
        el(
          "table",
          {},
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              ...["Created", "Type", "State", "Attempts", ""].map((h) => el("th", { scope: "col", textContent: h })),
            ),
          ),
          el("tbody", {}, ...rows),
        ),
      ),
    );
  }
  say(`${data.length} endpoints.`);
}

function route() {
  if (!key()) {
    show("signin");
    say("Sign in with your API key.");
    $("key").focus();
    return;
  }
  const [, view, id] = location.hash.split("/");
  const go = {
    sessions: () => listSessions(null),
    session: () => openSession(decodeURIComponent(id ?? "")),
    webhooks: () => listWebhooks(),
  }[view] ?? (() => listReviews(null));
  go().catch((error) => {
    if (error.message !== "signed out") {
      say(`Something failed: ${error.message}`);
    }
  });
}

/**
 * `action` as an event handler: a failure (the network, a refused key) is said, never left
 * silent, and `button` is disabled while it runs so a decision cannot be sent twice.
 */
function guarded(action, button) {
  return async (event) => {
    if (button) {
      button.disabled = true;
    }
    try {
      await action(event);
    } catch (error) {
      if (error.message !== "signed out") {
        say(`That failed: ${error.message}. Check the connection and try again.`);
      }
    } finally {
      if (button) {
        button.disabled = false;
      }
    }
  };
}

$("signin-form").addEventListener("submit", guarded(signIn));
$("sign-out").onclick = () => signOut();
$("filters").addEventListener(
  "submit",
  guarded((event) => {
    event.preventDefault();
    return listSessions(null);
  }),
);
$("first-page").onclick = guarded(() => listSessions(null));
$("next-page").onclick = guarded(() => listSessions(sessionCursor));
$("next-reviews").onclick = guarded(() => listReviews(reviewCursor));
$("review-form").addEventListener(
  "submit",
  guarded(decide, $("review-form").querySelector("button[type=submit]")),
);
$("erase").onclick = () => {
  $("erase-confirm").hidden = false;
  $("erase-yes").focus();
};
$("erase-no").onclick = () => {
  $("erase-confirm").hidden = true;
};
$("erase-yes").onclick = guarded(erase, $("erase-yes"));
window.addEventListener("hashchange", route);
route();
