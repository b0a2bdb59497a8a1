// The pages as people use them: the applicant's capture page (a link from the integrator, the
// document and the liveness challenge through the (fake) camera or through files, a session
// that completes), then the compliance officer's console (the review queue, the session, a
// decision with a note, the audit trail), and what another tenant's officer sees of it.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";

import {
  SCREENSHOTS,
  browser,
  drawnDocument,
  makeLink,
  png,
  startService,
  y4m,
} from "./harness.mjs";

const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 900 };
// The challenge takes about ten seconds to perform; the session a few hundred milliseconds.
const FLOW_MS = 60_000;

let service;
let camera;

before(async () => {
  service = await startService();
  const video = y4m(
    join(SCREENSHOTS, "..", "fake-camera.y4m"),
    drawnDocument(640, 480),
    640,
    480,
    10,
  );
  camera = await browser(video);
});

after(async () => {
  await camera?.close();
  await service?.stop();
});

test("an applicant photographs an ID card and answers the challenge; an officer approves it in the console", async () => {
  const link = await makeLink(service, {
    reference: "applicant-7",
    document_type: "id_card",
    redirect_url: `${service.base}/health?from=capture`,
  });
  const context = await camera.newContext({ viewport: PHONE });
  await context.grantPermissions(["camera"], { origin: service.base });
  const page = await context.newPage();

  await page.goto(link.url);
  await page.getByRole("button", { name: "Start" }).click();

  // The token left the address bar at once.
  assert.equal(new URL(page.url()).hash, "");
  await page.screenshot({ path: join(SCREENSHOTS, "capture-start-phone.png") });

  for (const side of ["front", "back"]) {
    // The button shows once the step's camera runs.
    const shoot = page.getByRole("button", { name: "Take photo" });
    await shoot.waitFor();
    if (side === "front") {
      await page.screenshot({ path: join(SCREENSHOTS, "capture-document-phone.png") });
    }
    await shoot.click();
    await page.getByRole("button", { name: "Use this photo" }).click();
  }

  await page.getByRole("button", { name: "I am ready" }).click();
  await page.waitForFunction(() => document.getElementById("prompt").textContent.includes("head"));
  await page.screenshot({ path: join(SCREENSHOTS, "capture-challenge-phone.png") });

  await page.waitForURL(/session_id=/, { timeout: FLOW_MS });
  const sessionId = new URL(page.url()).searchParams.get("session_id");
  const session = await (await service.api(`/v1/sessions/${sessionId}`)).json();
  assert.equal(session.status, "completed");
  assert.equal(session.reference, "applicant-7");

  // The link is spent: opened again, it says so.
  const again = await context.newPage();
  await again.goto(link.url);
  await again.getByText("This link has already been used").first().waitFor();
  await context.close();

  // The sandbox's ocr read nothing, so the session waits for a reviewer.
  assert.equal(session.decision, "review");
  const officer = await camera.newContext({ viewport: DESKTOP });
  const desk = await signIn(officer, service.makeKey("acme", "Ada Reviewer"));
  assert.ok(!desk.url().includes("kyc_test_"), "the key is in no URL");
  await desk.screenshot({ path: join(SCREENSHOTS, "console-queue-desktop.png") });
  await desk.getByRole("button", { name: sessionId }).click();
  await desk.getByRole("heading", { name: "Your decision" }).waitFor();
  // Every image the session has: the document's two sides, then the selfie frames.
  const { images } = await (await service.api(`/v1/sessions/${sessionId}/images`)).json();
  assert.ok(images.length >= 3, `${images}`);
  await desk.waitForFunction(
    (count) => document.querySelectorAll("#images img").length === count,
    images.length,
  );
  await desk.screenshot({ path: join(SCREENSHOTS, "console-session-desktop.png") });

  await desk.getByLabel("Approve", { exact: true }).check();
  await desk.getByLabel("Reasons").selectOption("document_verified_manually");
  await desk.getByLabel("Note for the audit trail").fill("Compared with the issuer's specimen.");
  await desk.getByRole("button", { name: "Record decision" }).click();

  await desk.getByText("Your decision (approved) is recorded.").waitFor();
  const audit = await desk.locator("#audit").innerText();
  assert.match(audit, /Ada Reviewer .* decided approved, document_verified_manually/);
  assert.match(audit, /Compared with the issuer's specimen\./);
  const decided = await (await service.api(`/v1/sessions/${sessionId}`)).json();
  assert.equal(decided.decision, "approved");
  assert.equal(decided.automated_decision, "review");
  await desk.locator("#timeline li", { hasText: "Ada Reviewer decided approved" }).waitFor();

  // Another tenant's officer sees nothing of it.
  const stranger = await camera.newContext({ viewport: DESKTOP });
  const theirs = await signIn(stranger, service.makeKey("other-bank", "Other officer"));
  await theirs.getByText("Nothing waits for a decision.").waitFor();
  await theirs.goto(`${service.base}/console#/session/${sessionId}`);
  await theirs.getByText("No such session for your key's tenant.").waitFor();
  await stranger.close();
  await officer.close();
});

/** The console, signed in with `key` in a page of `context`, showing the review queue. */
async function signIn(context, key) {
  const page = await context.newPage();
  await page.goto(`${service.base}/console`);
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Review queue" }).waitFor();
  return page;
}

test("without a camera the applicant chooses files, and the session completes", async () => {
  const link = await makeLink(service, { document_type: "passport" });
  // No fake camera and no permission: getUserMedia fails as on a desktop that denies it.
  const plain = await browser();
  try {
    const context = await plain.newContext({ viewport: DESKTOP });
    const page = await context.newPage();
    await page.goto(link.url);
    await page.getByRole("button", { name: "Start" }).click();
    await page.getByText("Choose a photo of your document", { exact: true }).waitFor();
    await page.screenshot({ path: join(SCREENSHOTS, "capture-files-desktop.png") });

    const document = png(drawnDocument(320, 240), 320, 240);
    await page.setInputFiles("#file", { name: "passport.png", mimeType: "image/png", buffer: document });
    await page.getByRole("button", { name: "Use this photo" }).click();
    // The file input takes its handler only once the camera has been refused: choosing
    // before the fallback shows would go unheard (an applicant cannot, since it is hidden).
    await page.getByText("Choose photos of your face, in the order taken").waitFor();
    await page.setInputFiles("#selfie-files", [
      { name: "face-1.png", mimeType: "image/png", buffer: document },
      { name: "face-2.png", mimeType: "image/png", buffer: document },
    ]);
    await page.getByText("All done").first().waitFor({ timeout: FLOW_MS });
    await context.close();
  } finally {
    await plain.close();
  }
});

test("a link that is not valid says so, and offers nothing to photograph", async () => {
  const context = await camera.newContext({ viewport: PHONE });
  const page = await context.newPage();

  await page.goto(`${service.base}/capture#cap_${"A".repeat(40)}`);
  await page.getByText("This link is not valid").first().waitFor();
  assert.equal(await page.getByRole("button", { name: "Start" }).isVisible(), false);

  const bare = await context.newPage();
  await bare.goto(`${service.base}/capture`);
  await bare.getByText("This page needs the link you were sent").first().waitFor();
  await context.close();
});

// An expired link takes half an hour and a revoked one an operator; the service's side of both
// is tested in Rust (tests/api/capture.rs). Here the page gets the service's answers for them.
test("an expired or withdrawn link says to ask for a new one", async () => {
  const context = await camera.newContext({ viewport: PHONE });
  for (const [code, message] of [
    ["capture-link-expired", "This link has expired. Ask for a new one."],
    ["capture-link-revoked", "This link has been withdrawn. Ask for a new one."],
  ]) {
    const page = await context.newPage();
    await page.route("**/v1/capture", (route) =>
      route.fulfill({
        status: 410,
        contentType: "application/problem+json",
        body: JSON.stringify({ type: `urn:kyc-orchestrator:problem:${code}`, status: 410 }),
      }),
    );
    await page.goto(`${service.base}/capture#cap_${"B".repeat(40)}`);
    await page.getByText(message).first().waitFor();
    assert.equal(await page.getByRole("button", { name: "Start" }).isVisible(), false);
    await page.close();
  }
  await context.close();
});
