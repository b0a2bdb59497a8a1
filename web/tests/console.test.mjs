// The console on a session the real agents decided: the drawn passport and head-turning selfie
// that `kyc-eval inputs` makes, sent through the API, then read by an officer. What a person
// needs to judge it must be there: the two faces that were compared side by side (the
// document's portrait as the agents cut it out, and the selfie frame's face), and each check's
// figures read against its thresholds, the MRZ's check digits one by one.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { ROOT, SCREENSHOTS, browser, startService } from "./harness.mjs";

const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

let service;
let chromium;
let inputs;

before(async () => {
  service = await startService({ real: true });
  chromium = await browser();
  inputs = mkdtempSync(join(tmpdir(), "kyc-inputs-"));
  const evaluator = process.env.EVAL_BIN ?? join(ROOT, "target", "debug", "kyc-eval");
  execFileSync(evaluator, ["inputs", inputs], { cwd: ROOT, stdio: "ignore" });
});

after(async () => {
  await chromium?.close();
  await service?.stop();
  if (inputs) {
    rmSync(inputs, { recursive: true, force: true });
  }
});

/** The drawn passport and frames, as a session, streamed to its decision. */
async function decidedSession() {
  const b64 = (name) => readFileSync(join(inputs, name)).toString("base64");
  const frames = readdirSync(inputs)
    .filter((name) => name.startsWith("selfie-"))
    .sort()
    .map(b64);
  const response = await service.api("/v1/sessions", {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/x-ndjson" },
    body: JSON.stringify({
      reference: "real-agents-1",
      selfie: { frames },
      document: { type: "passport", front: b64("document.jpg") },
    }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  const lines = (await response.text()).trim().split("\n").map((line) => JSON.parse(line));
  const done = lines.findLast((line) => line.type === "session.completed");
  assert.ok(done, "the session completed");
  return done;
}

test("an officer sees the faces the agents compared and the checks read against their thresholds", async () => {
  const done = await decidedSession();
  assert.equal(done.checks.face_match.status, "passed", JSON.stringify(done.checks.face_match));
  const context = await chromium.newContext({ viewport: DESKTOP });
  const page = await context.newPage();
  await page.goto(`${service.base}/console`);
  await page.getByLabel("API key").fill(service.makeKey("acme", "Grace Officer"));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Review queue" }).waitFor();

  await page.goto(`${service.base}/console#/session/${done.session_id}`);

  // The document's portrait, and the selfie frame face_match chose, cropped to its face.
  const portrait = page.getByRole("img", { name: "The portrait on the document" });
  await portrait.waitFor();
  const face = page.getByRole("img", { name: `The face in selfie frame ${done.checks.face_match.details.selfie.frame}` });
  await face.waitFor();
  const [portraitSize, faceSize] = await Promise.all([
    portrait.evaluate((img) => [img.naturalWidth, img.naturalHeight]),
    face.evaluate((canvas) => [canvas.width, canvas.height]),
  ]);
  // Crops, not the whole page or frame (the page is 1600x1200, a frame 520x660).
  assert.ok(portraitSize[0] > 50 && portraitSize[0] < 800, `portrait ${portraitSize}`);
  assert.ok(faceSize[0] > 50 && faceSize[0] < 520, `face ${faceSize}`);
  assert.equal(await page.locator("#faces-note").innerText(), "");
  assert.doesNotMatch(await page.locator("#summary").innerText(), /\(\)/, "no empty list of reasons");

  // Every check's figures in words: the face distance, the MRZ's digits, the photo's quality.
  const checks = await page.locator("#checks").innerText();
  assert.match(checks, /face distance [\d.]+: the same person below 0\.5, different people from 0\.6; read as the same person/);
  assert.match(checks, /check digits: document number held, date of birth held, date of expiry held/);
  assert.match(checks, /sharpness [\d.]+: at least \d+ needed, met/);
  await page.screenshot({ path: join(SCREENSHOTS, "console-real-session-desktop.png"), fullPage: true });
  await page.locator("#faces").screenshot({ path: join(SCREENSHOTS, "console-faces-desktop.png") });
  // On a phone the page reflows to its width: nothing wider than the screen but the tables'
  // own scrolling.
  await page.setViewportSize(PHONE);
  await page.screenshot({ path: join(SCREENSHOTS, "console-real-session-phone.png") });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than a phone`);

  // The personal data on the page never reached the service's log.
  const logs = service.logs();
  assert.ok(!logs.includes("L898902C3"), "no document number in a log line");
  await context.close();
});
