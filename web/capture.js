// The hosted capture page: the applicant photographs their document, answers a liveness
// challenge with the front camera, and the page starts the link's one session and shows its
// progress (which checks run, never what they found) until it is decided.
//
// The link's token arrives in the URL's fragment, which browsers send to no server. The page
// moves it to sessionStorage and takes it out of the address bar at once, so it is in no
// history entry, bookmark or screenshot of the address after the first load.

import { readLines } from "./progress.js";

const TOKEN_KEY = "kyc.capture.token";
const SUBMITTED_KEY = "kyc.capture.submitted";

const DOCUMENT_NAMES = {
  passport: "passport",
  id_card: "identity card",
  driving_licence: "driving licence",
};

// Each step is named from the applicant's own point of view, as the service draws it.
const STEP_PROMPTS = {
  turn_left: "Turn your head to your left",
  turn_right: "Turn your head to your right",
  look_up: "Tilt your head up",
  look_down: "Tilt your head down",
};

const CHECK_NAMES = {
  liveness: "Checking that you are here in person",
  doc_capture: "Checking the photo of your document",
  ocr: "Reading your document",
  face_match: "Comparing your face with your document",
};

// doc_capture's default thresholds (config/default.toml), measured here on a frame of the
// same width (800 pixels) as doc_capture measures on, so the page warns of what the check would
// refuse. The service decides; these are only hints.
const HINTS = {
  width: 800,
  minBrightness: 70,
  maxDarkFraction: 0.5,
  maxGlareFraction: 0.04,
  minSharpness: 100,
};

// The liveness capture: a frontal start, then each step and back to the camera.
const FRONTAL_MS = 1200;
const STEP_MS = 1400;
const RETURN_MS = 1200;
const MIN_FRAME_INTERVAL_MS = 250;

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  link: null,
  front: null,
  back: null,
  frames: [],
  challengeId: null,
  stream: null,
  hintTimer: null,
  // Bumped by every step: a step's work that resumes after another step began (a camera
  // permission answered late) sees it is stale and stops.
  step: 0,
};

function takeToken() {
  // Tokens are letters, digits and `_`: nothing to decode.
  const fromUrl = location.hash.slice(1);
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function say(text) {
  $("status").textContent = text;
}

const SECTIONS = ["intro", "camera", "check", "selfie", "progress", "done", "failure"];

function show(section) {
  for (const id of SECTIONS) {
    $(id).hidden = id !== section;
  }
}

function fail(text, retry) {
  stopCamera();
  show("failure");
  $("failure-text").textContent = text;
  say(text);
  const button = $("retry");
  button.hidden = !retry;
  button.onclick = retry ?? null;
  $("title").focus();
}

function api(path, init = {}) {
  const headers = new Headers(init.headers);
  headers.set("Authorization", `Bearer ${state.token}`);
  return fetch(path, { ...init, headers, cache: "no-store" });
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return {};
  }
}

/** The message for an answer that says the link cannot be used. */
async function linkRefused(response) {
  if (response.status === 401) {
    return "This link is not valid. Check that you opened the whole link you were sent.";
  }
  const problem = await problemOf(response);
  if (String(problem.type).endsWith("capture-link-used")) {
    return "This link has already been used. Ask for a new one if you need to verify again.";
  }
  if (String(problem.type).endsWith("capture-link-revoked")) {
    return "This link has been withdrawn. Ask for a new one.";
  }
  return "This link has expired. Ask for a new one.";
}

const OFFLINE = "The connection failed. Check your network and try again.";

async function start() {
  state.token = takeToken();
  if (!state.token) {
    fail("This page needs the link you were sent. Open it again from your message.");
    return;
  }
  let response;
  try {
    response = await api("/v1/capture");
  } catch {
    fail(OFFLINE, start);
    return;
  }
  if (response.status === 410 && sessionStorage.getItem(SUBMITTED_KEY)) {
    follow();
    return;
  }
  if (response.status === 401 || response.status === 410) {
    fail(await linkRefused(response));
    return;
  }
  if (!response.ok) {
    fail("The service could not be reached. Try again in a moment.", start);
    return;
  }
  state.link = await response.json();
  $("document-name").textContent = documentName();
  show("intro");
  say("Ready when you are: press Start.");
  $("begin").onclick = () => documentStep("front");
}

function documentName() {
  return DOCUMENT_NAMES[state.link.document_type] ?? "identity document";
}

async function openCamera(facing) {
  if (!navigator.mediaDevices?.getUserMedia) {
    return null;
  }
  const wide = facing === "environment";
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: false,
      video: {
        facingMode: { ideal: facing },
        width: { ideal: wide ? 1920 : 1280 },
        height: { ideal: wide ? 1080 : 720 },
      },
    });
  } catch {
    // Denied, no camera, or one in use elsewhere: the page offers files instead.
    return null;
  }
}

function stopCamera() {
  clearInterval(state.hintTimer);
  state.hintTimer = null;
  state.stream?.getTracks().forEach((track) => track.stop());
  state.stream = null;
}

async function ready(video) {
  await video.play().catch(() => {});
  if (video.videoWidth) {
    return;
  }
  await new Promise((resolve) => video.addEventListener("loadedmetadata", resolve, { once: true }));
}

/** The video's current frame, scaled so its longer side is at most `maxSide`, as a canvas. */
function frameOf(video, maxSide) {
  const scale = Math.min(1, maxSide / Math.max(video.videoWidth, video.videoHeight));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return canvas;
}

function jpeg(canvas, quality) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", quality));
}

async function documentStep(side) {
  stopCamera();
  const step = ++state.step;
  show("camera");
  const title =
    side === "front" ? `Photograph your ${documentName()}` : `Now the back of your ${documentName()}`;
  $("camera-title").textContent = title;
  $("instruction").textContent =
    state.link.document_type === "passport"
      ? "Open it at the page with your photo, lay it flat, and fit the whole page in the frame."
      : "Lay it flat and fit the whole card in the frame.";
  $("hint").textContent = "";
  $("file").value = "";
  // The button shows once this step's camera runs, so a press never takes the step before's.
  $("shoot").hidden = true;
  $("shoot").onclick = null;
  const video = $("preview");
  // Files are accepted from the start, while the camera permission may still be asked.
  $("file").onchange = () => {
    const file = $("file").files[0];
    if (file && step === state.step) {
      review(side, file);
    }
  };
  const stream = await openCamera("environment");
  if (step !== state.step) {
    stream?.getTracks().forEach((track) => track.stop());
    return;
  }
  state.stream = stream;
  if (state.stream) {
    video.srcObject = state.stream;
    $("file-label").textContent = "Or choose a photo from this device";
    await ready(video);
    if (step !== state.step) {
      return;
    }
    $("shoot").hidden = false;
    say(`${title}. Press Take photo when it is sharp and fills the frame.`);
    startHints(video);
  } else {
    $("shoot").hidden = true;
    $("file-label").textContent = "Choose a photo of your document";
    say("The camera is not available here. Choose a photo of your document instead.");
  }
  $("shoot").onclick = async () => {
    const blob = await jpeg(frameOf(video, 2560), 0.92);
    if (step === state.step) {
      review(side, blob);
    }
  };
}

function review(side, blob) {
  stopCamera();
  state.step++;
  show("check");
  const shot = $("shot");
  if (shot.src) {
    URL.revokeObjectURL(shot.src);
  }
  shot.src = URL.createObjectURL(blob);
  say("Check the photo: all four corners in view, sharp, and no glare.");
  $("check-title").focus?.();
  $("retake").onclick = () => documentStep(side);
  $("accept").onclick = () => {
    state[side] = blob;
    if (side === "front" && state.link.document_back) {
      documentStep("back");
    } else {
      selfieStep();
    }
  };
}

function startHints(video) {
  let last = "";
  state.hintTimer = setInterval(() => {
    if (!video.videoWidth) {
      return;
    }
    const hint = hintFor(frameOf(video, HINTS.width));
    $("hint").textContent = hint;
    if (hint !== last) {
      // Only a change is announced, not the same hint every second.
      say(hint || "Looks good.");
      last = hint;
    }
  }, 1000);
}

/** What the frame lacks, in doc_capture's measures: light, sharpness, glare. */
function hintFor(canvas) {
  const { width, height } = canvas;
  const rgba = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  const n = width * height;
  const gray = new Float32Array(n);
  let sum = 0;
  let dark = 0;
  const histogram = new Uint32Array(256);
  for (let i = 0; i < n; i++) {
    const [r, g, b] = [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]];
    const luma = Math.floor((r * 299 + g * 587 + b * 114) / 1000);
    gray[i] = luma;
    sum += luma;
    dark += luma < 40 ? 1 : 0;
    histogram[luma]++;
  }
  if (sum / n < HINTS.minBrightness || dark / n > HINTS.maxDarkFraction) {
    return "Too dark: move to more light.";
  }
  // Glare: colourless pixels well above the paper's brightness (its median), away from the edges.
  let seen = 0;
  let paper = 0;
  while (paper < 255 && (seen += histogram[paper]) * 2 < n) {
    paper++;
  }
  const floor = Math.max(235, paper + 20);
  const mx = Math.floor(width / 50);
  const my = Math.floor(height / 50);
  let glare = 0;
  let laplacian = 0;
  let squares = 0;
  let counted = 0;
  for (let y = 1; y < height - 1; y++) {
    for (let x = 1; x < width - 1; x++) {
      const i = y * width + x;
      const v = gray[i - 1] + gray[i + 1] + gray[i - width] + gray[i + width] - 4 * gray[i];
      laplacian += v;
      squares += v * v;
      counted++;
      if (x > mx && y > my && x < width - mx && y < height - my && gray[i] >= floor) {
        const [r, g, b] = [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]];
        if (Math.max(r, g, b) - Math.min(r, g, b) < 25) {
          glare++;
        }
      }
    }
  }
  const mean = laplacian / counted;
  if (squares / counted - mean * mean < HINTS.minSharpness) {
    return "Blurry: hold still and let the camera focus.";
  }
  if (glare / n > HINTS.maxGlareFraction) {
    return "Glare: tilt the document away from the light.";
  }
  return "";
}

async function selfieStep() {
  stopCamera();
  const step = ++state.step;
  show("selfie");
  $("prompt").textContent = "";
  $("record").hidden = true;
  $("record").onclick = null;
  $("selfie-fallback").hidden = true;
  const stream = await openCamera("user");
  if (step !== state.step) {
    stream?.getTracks().forEach((track) => track.stop());
    return;
  }
  state.stream = stream;
  if (!state.stream) {
    $("selfie-fallback").hidden = false;
    $("selfie-files").value = "";
    say("The camera is not available here. Choose photos of your face instead.");
    $("selfie-files").onchange = () => {
      const files = [...$("selfie-files").files].slice(0, state.link.selfie_frames);
      if (files.length) {
        state.frames = files;
        state.challengeId = null;
        submit();
      }
    };
    return;
  }
  const video = $("face");
  video.srcObject = state.stream;
  await ready(video);
  if (step !== state.step) {
    return;
  }
  $("record").hidden = false;
  say("Put your face in the oval, then press I am ready.");
  $("record").onclick = () => recordChallenge(video);
}

async function recordChallenge(video) {
  $("record").hidden = true;
  let response;
  try {
    response = await api("/v1/capture/challenge", { method: "POST" });
  } catch {
    fail(OFFLINE, selfieStep);
    return;
  }
  if (response.status === 401 || response.status === 410) {
    fail(await linkRefused(response));
    return;
  }
  if (!response.ok) {
    fail("The service could not start the face check. Try again.", selfieStep);
    return;
  }
  const challenge = await response.json();
  const script = [["Look straight at the camera", FRONTAL_MS]];
  for (const step of challenge.steps) {
    script.push([STEP_PROMPTS[step] ?? step, STEP_MS], ["Now back to the camera", RETURN_MS]);
  }
  const total = script.reduce((sum, [, ms]) => sum + ms, 0);
  const limit = state.link.selfie_frames;
  const interval = Math.max(MIN_FRAME_INTERVAL_MS, Math.ceil(total / limit));
  const frames = [];
  const timer = setInterval(() => {
    if (frames.length < limit) {
      frames.push(jpeg(frameOf(video, 720), 0.85));
    }
  }, interval);
  for (const [text, ms] of script) {
    $("prompt").textContent = text;
    await new Promise((resolve) => setTimeout(resolve, ms));
  }
  clearInterval(timer);
  $("prompt").textContent = "Done.";
  state.frames = (await Promise.all(frames)).filter(Boolean);
  state.challengeId = challenge.id;
  stopCamera();
  submit();
}

async function submit() {
  stopCamera();
  show("progress");
  $("checks").replaceChildren();
  say("Sending your photos…");
  const form = new FormData();
  form.append("document_front", state.front, "front.jpg");
  if (state.back) {
    form.append("document_back", state.back, "back.jpg");
  }
  state.frames.forEach((frame, i) => form.append("selfie", frame, `selfie-${i}.jpg`));
  const metadata = state.challengeId ? { challenge_id: state.challengeId } : {};
  form.append("metadata", new Blob([JSON.stringify(metadata)], { type: "application/json" }));
  // Set before sending: should the page be reloaded while the session starts, it follows
  // the session rather than refusing a used link.
  sessionStorage.setItem(SUBMITTED_KEY, "1");
  let response;
  try {
    response = await api("/v1/capture/session", { method: "POST", body: form });
  } catch {
    fail("The connection was lost while sending. Your photos are still here: try again.", resume);
    return;
  }
  if (response.status === 410) {
    follow();
    return;
  }
  if (!response.ok) {
    sessionStorage.removeItem(SUBMITTED_KEY);
    await refused(response);
    return;
  }
  await showProgress(response);
}

/** A session the service would not start: say why, and go back to the step that can fix it. */
async function refused(response) {
  if (response.status === 401) {
    fail(await linkRefused(response));
    return;
  }
  if (response.status === 422) {
    const problem = await problemOf(response);
    const fields = (problem.errors ?? []).map((error) => error.field);
    if (fields.some((field) => field.includes("challenge"))) {
      fail("The head movements took too long to send. Do them once more.", selfieStep);
    } else if (fields.some((field) => field.startsWith("selfie"))) {
      fail("A photo of your face could not be read. Take them again.", selfieStep);
    } else {
      fail("A photo of your document could not be read. Take it again.", () =>
        documentStep("front"),
      );
    }
    return;
  }
  if (response.status === 413) {
    fail("The photos are too large to send. Take them again with the camera.", () =>
      documentStep("front"),
    );
    return;
  }
  fail("The service is busy. Try again in a moment.", resume);
}

/** After a lost connection: the session may have started, in which case the page follows it. */
async function resume() {
  let response;
  try {
    response = await api("/v1/capture");
  } catch {
    fail(OFFLINE, resume);
    return;
  }
  if (response.status === 410) {
    follow();
  } else if (response.ok) {
    submit();
  } else {
    fail(await linkRefused(response));
  }
}

async function follow() {
  show("progress");
  say("Checking your photos…");
  let response;
  try {
    response = await api("/v1/capture/events");
  } catch {
    fail(OFFLINE, follow);
    return;
  }
  if (response.status === 404) {
    // The link started no session after all: start over.
    sessionStorage.removeItem(SUBMITTED_KEY);
    start();
    return;
  }
  if (!response.ok) {
    sessionStorage.removeItem(SUBMITTED_KEY);
    fail(await linkRefused(response));
    return;
  }
  await showProgress(response);
}

async function showProgress(response) {
  show("progress");
  $("checks").replaceChildren();
  const items = new Map();
  const item = (check) => {
    if (!items.has(check)) {
      const li = document.createElement("li");
      li.textContent = CHECK_NAMES[check] ?? check;
      li.dataset.state = "waiting";
      $("checks").append(li);
      items.set(check, li);
    }
    return items.get(check);
  };
  let completed = null;
  try {
    await readLines(response, (line) => {
      if (line.type === "started") {
        line.checks.forEach(item);
        say("Checking your photos…");
      } else if (line.type === "running") {
        item(line.check).dataset.state = "running";
      } else if (line.type === "done") {
        const li = item(line.check);
        li.dataset.state = "done";
        say(`${li.textContent}: finished.`);
      } else if (line.type === "completed") {
        completed = line;
      }
    });
  } catch {
    // The stream broke; `completed` says whether it had ended.
  }
  if (!completed) {
    fail("The connection was lost while checking. Your photos were received.", follow);
    return;
  }
  sessionStorage.removeItem(SUBMITTED_KEY);
  sessionStorage.removeItem(TOKEN_KEY);
  if (completed.redirect_url) {
    show("done");
    $("done-text").textContent = "Thank you. All done: taking you back now.";
    say("All done. Taking you back now.");
    setTimeout(() => location.assign(completed.redirect_url), 1500);
  } else {
    show("done");
    say("All done. Thank you: you may close this page.");
  }
}

start();
