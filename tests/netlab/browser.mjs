// The NAT lab's browser: headless Chromium (Debian's /usr/bin/chromium, fake
// camera and microphone) running the web demo from the lab's calling-server
// over https://, started inside a home namespace by tests/lab.rs.
//
//   node browser.mjs <answer|place> <base-url> user=<me> peer=<rust user> spki=<base64>
//
// The server's certificate is trusted by its key's SPKI hash only
// (--ignore-certificate-errors-spki-list), not by ignoring every error.
// stdout carries JSON lines like lab-node's: ready, frames (with the
// browser's selected candidate pair), ended; progress goes to stderr.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from '../browser/node_modules/playwright-core/index.mjs';

const [scenario, base, ...rest] = process.argv.slice(2);
// Split at the first '=' only: base64 values end in '='.
const opts = Object.fromEntries(rest.map((a) => [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 40_000; // the longest any single wait may take
const MIN_ENERGY = 1e-4; // a heard tone exceeds this within a few hundred ms

const note = (...a) => console.error(`[lab browser ${scenario}]`, ...a);
const say = (obj) => console.log(JSON.stringify(obj));

async function main() {
  // A persistent profile: Chromium honours the SPKI list only with an
  // explicit --user-data-dir, and not in the off-the-record contexts
  // chromium.launch() opens pages in.
  const profile = mkdtempSync(path.join(tmpdir(), 'calling-lab-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: STEP_MS,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
      `--ignore-certificate-errors-spki-list=${opts.spki}`,
    ],
  });
  try {
    const page = browser.pages()[0] || await browser.newPage();
    page.setDefaultTimeout(STEP_MS);
    page.on('pageerror', (e) => note(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') note(`console: ${m.text()}`); });
    await page.goto(`${base}/?user=${encodeURIComponent(opts.user)}`);
    await page.click('#login-btn');
    await page.waitForFunction(() => window.demo && window.demo.client.userId);
    say({ type: 'ready', user: opts.user });
    if (scenario === 'answer') {
      await page.waitForSelector('#incoming:not([hidden])');
      await page.click('#accept-btn');
    } else if (scenario === 'place') {
      await page.fill('#callee', opts.peer);
      await page.click('#video-call-btn');
    } else {
      throw new Error(`unknown scenario ${scenario}`);
    }
    const got = await waitMedia(page, opts.peer);
    say({ type: 'frames', from: opts.peer, ...got, pair: await selectedPair(page, opts.peer) });
    // Stay in the call until the lab has checked the Rust side, then hang up.
    await new Promise((resolve) => {
      process.stdin.once('data', resolve);
      process.stdin.once('end', resolve);
      setTimeout(resolve, STEP_MS);
    });
    await page.click('#hangup-btn');
    await page.waitForFunction(() => window.demo.events.some((e) => e.type === 'callEnd'));
    say({ type: 'ended' });
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

// Waits until the page decodes video and hears audio from `peer`.
async function waitMedia(page, peer) {
  const deadline = Date.now() + STEP_MS;
  let last = null;
  while (Date.now() < deadline) {
    last = await page.evaluate(async (p) => (await window.demo.client.mediaStats())[p] || null, peer);
    if (last && last.audioEnergy > MIN_ENERGY && last.audioPackets > 0 && last.framesDecoded > 0) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no media from ${peer}: ${JSON.stringify(last)}`);
}

// The browser's selected candidate pair towards `peer`: types and addresses.
async function selectedPair(page, peer) {
  return page.evaluate(async (p) => {
    const call = window.demo.client.active;
    const pc = call && call.peers.get(p) && call.peers.get(p).pc;
    if (!pc) return null;
    const stats = await pc.getStats();
    let pairId = null;
    stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
    const pair = pairId && stats.get(pairId);
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId) || {};
    const remote = stats.get(pair.remoteCandidateId) || {};
    return {
      local: local.candidateType, local_addr: `${local.address}:${local.port}`,
      remote: remote.candidateType, remote_addr: `${remote.address}:${remote.port}`,
    };
  }, peer);
}

main().catch((e) => {
  say({ type: 'fatal', error: String(e && e.message ? e.message : e) });
  process.exit(1);
});
