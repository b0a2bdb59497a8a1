// What the pages' tests share: a service started from the test build on a free port (sandbox
// agents whose ocr finds nothing readable, so sessions go to review, or the real agents; SQLite
// in a fresh folder, so images are kept; keys made with the `keys create` command), Debian's
// Chromium driven by Playwright with a fake camera, and the images the tests feed it, drawn here
// (or by `kyc-eval inputs`).

import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { deflateSync } from "node:zlib";

import { chromium } from "playwright-core";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const SCREENSHOTS = join(ROOT, "target", "screenshots");
const BROWSER = process.env.CHROMIUM ?? "/usr/bin/chromium";

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * The service from the test build, ready; `stop()` ends it and removes its data. With `real`,
 * the embedded defaults' real agents on the models `scripts/models.sh` fetched, in place of the
 * sandbox ones.
 */
export async function startService({ real = false } = {}) {
  const port = await freePort();
  const binary = process.env.SERVER_BIN ?? join(ROOT, "target", "debug", "kyc-orchestrator");
  const data = mkdtempSync(join(tmpdir(), "kyc-web-"));
  const env = {
    ...process.env,
    KYC__SERVER__PORT: String(port),
    KYC__SERVER__HOST: "127.0.0.1",
    KYC__STORE__URL: `sqlite://${data}/kyc.db`,
    KYC__STORE__BLOB_DIR: join(data, "blobs"),
    KYC__METRICS__LISTEN: "",
  };
  if (real) {
    env.KYC__MODELS__DIR = join(ROOT, "models");
  } else {
    env.KYC__AGENTS__OCR__SANDBOX__RESULT = "fail";
    env.KYC__AGENTS__OCR__SANDBOX__REASON = "mrz_unreadable";
  }
  const config = real ? [] : ["--config", join(ROOT, "config", "sandbox.toml")];
  /** A stored key of `tenant`, made as an operator makes one. */
  const makeKey = (tenant, label) =>
    execFileSync(binary, [...config, "keys", "create", "--tenant", tenant, "--label", label], {
      env,
      encoding: "utf8",
    }).trim();
  const key = makeKey("acme", "Integration backend");
  const logs = [];
  const child = spawn(binary, config, { env, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.on("data", (chunk) => logs.push(chunk));
  child.stderr.on("data", (chunk) => logs.push(chunk));
  const base = `http://127.0.0.1:${port}`;
  // Readiness is a condition to wait for, polled until the service says so or exits.
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`the service exited (${child.exitCode}):\n${Buffer.concat(logs)}`);
    }
    try {
      const ready = await fetch(`${base}/health/ready`);
      if (ready.ok) {
        break;
      }
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    base,
    key,
    makeKey,
    logs: () => Buffer.concat(logs).toString(),
    async api(path, init = {}) {
      const headers = { authorization: `Bearer ${key}`, ...(init.headers ?? {}) };
      return fetch(`${base}${path}`, { ...init, headers });
    },
    async stop() {
      child.kill("SIGTERM");
      await new Promise((resolve) => child.once("exit", resolve));
      rmSync(data, { recursive: true, force: true });
    },
  };
}

/** Chromium, headless, with a camera that plays `video` (a .y4m file) when one is given. */
export async function browser(video) {
  const args = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ];
  if (video) {
    args.push(
      "--use-fake-device-for-media-stream",
      "--use-fake-ui-for-media-stream",
      `--use-file-for-fake-video-capture=${video}`,
    );
  }
  return chromium.launch({ executablePath: BROWSER, headless: true, args });
}

/**
 * A drawn document: a light card with a darker photo box and lines of "text", as RGB rows of
 * `width` x `height`.
 */
export function drawnDocument(width, height) {
  const rgb = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const card = x > width * 0.1 && x < width * 0.9 && y > height * 0.15 && y < height * 0.85;
      const photo = card && x > width * 0.15 && x < width * 0.35 && y > height * 0.25 && y < height * 0.7;
      const line = card && x > width * 0.4 && x < width * 0.85 && Math.floor(y / 12) % 3 === 0;
      const value = photo ? 90 : line ? 40 : card ? 235 : 60;
      rgb.set([value, value, photo ? 110 : value], (y * width + x) * 3);
    }
  }
  return rgb;
}

/** `rgb` as a .y4m file of `frames` identical frames (4:2:0), which Chromium's fake camera plays. */
export function y4m(path, rgb, width, height, frames) {
  const y = Buffer.alloc(width * height);
  const u = Buffer.alloc((width / 2) * (height / 2));
  const v = Buffer.alloc((width / 2) * (height / 2));
  for (let row = 0; row < height; row++) {
    for (let col = 0; col < width; col++) {
      const i = (row * width + col) * 3;
      const [r, g, b] = [rgb[i], rgb[i + 1], rgb[i + 2]];
      y[row * width + col] = Math.round(0.299 * r + 0.587 * g + 0.114 * b);
      if (row % 2 === 0 && col % 2 === 0) {
        const j = (row / 2) * (width / 2) + col / 2;
        u[j] = Math.round(128 - 0.168736 * r - 0.331264 * g + 0.5 * b);
        v[j] = Math.round(128 + 0.5 * r - 0.418688 * g - 0.081312 * b);
      }
    }
  }
  const frame = Buffer.concat([Buffer.from("FRAME\n"), y, u, v]);
  const header = Buffer.from(`YUV4MPEG2 W${width} H${height} F10:1 Ip A1:1 C420jpeg\n`);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, Buffer.concat([header, ...Array(frames).fill(frame)]));
  return path;
}

/** `rgb` as a PNG file's bytes (8-bit RGB, no filter). */
export function png(rgb, width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) {
      c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    }
    return c >>> 0;
  });
  const crc = (bytes) => {
    let c = 0xffffffff;
    for (const byte of bytes) {
      c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8);
    }
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([length, body, sum]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let row = 0; row < height; row++) {
    rgb.copy(raw, row * (width * 3 + 1) + 1, row * width * 3, (row + 1) * width * 3);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(raw)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

/** A capture link made with the service's key. */
export async function makeLink(service, body) {
  const response = await service.api("/v1/capture-links", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (response.status !== 201) {
    throw new Error(`capture link: ${response.status} ${await response.text()}`);
  }
  return response.json();
}
