// The NAT lab's browser: headless Chromium (Debian's /usr/bin/chromium, fake
// camera and microphone) running the web demo from the lab's calling-server
// over https://, started inside a home namespace by tests/lab.rs.
//
//   node browser.mjs <answer|place> <base-url> user=<me> peer=<rust user> spki=<base64> [watch=1] [restore_ms=N]
//
// The server's certificate is trusted by its key's SPKI hash only
// (--ignore-certificate-errors-spki-list), not by ignoring every error.
// stdout carries JSON lines like lab-node's: ready, frames (with the
// browser's selected candidate pair), ended; progress goes to stderr.
// With watch=1 it also follows the video it decodes until told to hang up:
// stalled / resumed (gap_ms) like lab-node, and calling.js's media events
// ({"type":"event","event":"mediaRestored","user":...,"gapMs":...}) and the
// peer connection's timeline marks ({"type":"mark","what":"ice-restart",...})
// and calling.js's log lines ({"type":"log","text":...}).
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
const WATCH_MS = 120_000; // the longest a watched call may last
const STALL_MS = 400; // as lab-node's --stall-ms
const MEDIA_EVENTS = ['mediaInterrupted', 'mediaRestored', 'mediaFailed', 'callEnd', 'error'];

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
    const restore = opts.restore_ms ? `&restore_ms=${encodeURIComponent(opts.restore_ms)}` : '';
    // Chromium can drop a load with ERR_NETWORK_CHANGED while the lab is
    // still settling its namespace's links and routes: load and log in
    // again (three tries, each bounded), rather than fail the scenario.
    for (let attempt = 1; ; attempt++) {
      try {
        await page.goto(`${base}/?user=${encodeURIComponent(opts.user)}${restore}`);
        await page.click('#login-btn');
        await page.waitForFunction(() => window.demo && window.demo.trtc && window.demo.trtc.userID,
          null, { timeout: Math.min(STEP_MS, 15000) });
        break;
      } catch (e) {
        if (attempt >= 3) throw e;
        note(`login attempt ${attempt} failed (${e.message}); loading the page again`);
      }
    }
    // calling.js's log lines, for watch=1.
    await page.evaluate(() => {
      window.labLog = [];
      window.demo.client.addEventListener('log', (e) => window.labLog.push(e.detail.text));
    });
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
    let told = false;
    const toldP = new Promise((resolve) => {
      const done = () => { told = true; resolve(); };
      process.stdin.once('data', done);
      process.stdin.once('end', done);
      setTimeout(done, opts.watch ? WATCH_MS : STEP_MS);
    });
    if (opts.watch) await watch(page, opts.peer, () => told);
    await toldP;
    // A call that ended by itself (media failed) has nothing to hang up.
    if (await page.evaluate(() => window.demo.client.active !== null)) await page.click('#hangup-btn');
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

// Until `stop()`: reports stalls of the video decoded from `peer` and their
// end (as lab-node does for its frames), and calling.js's media events.
async function watch(page, peer, stop) {
  let last = -1;
  let lastChange = Date.now();
  let stalled = false;
  let seen = 0;
  let seenMarks = 0;
  let seenLogs = 0;
  while (!stop()) {
    const [stats, events, marks, logs] = await page.evaluate(async ([p, types]) => {
      const call = window.demo.client.active;
      const link = call && call.peers.get(p);
      return [
        (await window.demo.client.mediaStats())[p] || null,
        window.demo.events.filter((e) => types.includes(e.type)),
        link ? link.timeline : [],
        window.labLog,
      ];
    }, [peer, MEDIA_EVENTS]);
    for (const text of logs.slice(seenLogs)) say({ type: 'log', text });
    seenLogs = logs.length;
    for (const e of events.slice(seen)) say({ ...e, event: e.type, type: 'event' });
    seen = events.length;
    for (const [what, ms] of marks.slice(seenMarks)) say({ type: 'mark', what, ms });
    seenMarks = marks.length;
    const now = Date.now();
    const frames = stats ? stats.framesDecoded : last;
    if (frames !== last) {
      if (stalled) say({ type: 'resumed', gap_ms: now - lastChange, pair: await selectedPair(page, peer) });
      stalled = false;
      last = frames;
      lastChange = now;
    } else if (!stalled && now - lastChange >= STALL_MS) {
      stalled = true;
      say({ type: 'stalled' });
    }
    await new Promise((r) => setTimeout(r, 50));
  }
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
