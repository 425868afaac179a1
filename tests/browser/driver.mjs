// Drives headless Chromium (Debian's /usr/bin/chromium, fake camera and
// microphone) through the web demo served by calling-server.
//
//   node driver.mjs <scenario> <base-url> [options as key=value]
//
// Scenarios (each exits 0 on success, 1 with a reason on stderr):
//   browser-to-browser  web-a video-calls web-b, both see and hear each other, hang up
//   group               web-a calls web-b and web-c; all three see and hear each other
//   reject-busy-cancel  reject, line busy, cancel and an offline callee as the page shows them
//   mixed-group         web-a calls web-b and the Rust client peer= (a group call)
//   server-loss         log in, print READY, show the server going away, print SEEN
//   answer              log in as user=, print READY, accept the next call,
//                       check media from peer=, print MEDIA_OK, wait for the call end
//   place               log in as user=, video-call peer=, check media, print
//                       MEDIA_OK, hang up, see the call end
//   answer-relay        as answer, but the page is set to relay-only (?relay=1): print
//                       ICE <json of the page's iceServers>, MEDIA_OK, then
//                       PAIR <local type> <remote type> of the selected candidate pair,
//                       REFRESHED once the page renewed its TURN credential (and set it
//                       on the live connection), ENDED
//   bench-b2b           web-a calls web-b count= times; web-b's setup figures
//   bench               log in as user=, accept count= calls in a row, print
//                       SETUP <caller> <connect ms> <first frame ms> for each
//                       (answer -> ICE+DTLS connected, answer -> first decoded frame)
//
// Lines on stdout are for the Rust test that runs this; progress goes to stderr.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';

const [scenario, base, ...rest] = process.argv.slice(2);
const opts = Object.fromEntries(rest.map((a) => a.split('=')));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = opts.artifacts || path.resolve('target/browser');
const STEP_MS = 20_000; // the longest any single wait may take
// totalAudioEnergy (sum of squared levels x seconds) a heard tone or beep
// exceeds within a few hundred ms; digital silence stays at 0.
const MIN_ENERGY = 1e-4;

const note = (...a) => console.error(`[driver ${scenario}]`, ...a);
const say = (line) => console.log(line);

function fail(why) {
  throw new Error(why);
}

async function launch() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: STEP_MS,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  return browser;
}

const pages = [];

async function newPage(browser, user) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on('pageerror', (e) => note(`${user}: page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') note(`${user}: console: ${m.text()}`); });
  pages.push([user, page]);
  return page;
}

// Opens the demo page as `user` (with `query` added to its URL) and logs in.
async function openTab(browser, user, query = '') {
  const page = await newPage(browser, user);
  const dtls = process.env.DTLS_ROLE ? `&dtls=${encodeURIComponent(process.env.DTLS_ROLE)}` : '';
  await page.goto(`${base}/?user=${encodeURIComponent(user)}${dtls}${query ? `&${query}` : ''}`);
  await page.click('#login-btn');
  await page.waitForFunction(() => window.demo && window.demo.trtc && window.demo.trtc.userID);
  note(`${user} logged in${query ? ` (${query})` : ''}`);
  return page;
}

// Waits until the banner shows text containing `want`.
async function waitBanner(page, want) {
  await page.waitForFunction((w) => {
    const el = document.getElementById('error');
    return !el.hidden && el.textContent.includes(w);
  }, want);
}

// Waits until the page has recorded an event of `type` matching `pred`.
async function waitEvent(page, type, fields = {}) {
  await page.waitForFunction(
    ([t, f]) => window.demo.events.some((e) => e.type === t && Object.entries(f).every(([k, v]) => e[k] === v)),
    [type, fields],
  );
}

// Waits until `page` decodes video frames (if `video`) and hears audio from
// `peer`. `energy: false` asks for audio packets only: Chromium's fake
// microphone beeps in step with its fake camera, so a browser without a
// camera sends silence.
async function waitMedia(page, peer, video = true, { energy = true } = {}) {
  const deadline = Date.now() + STEP_MS;
  let last = null;
  while (Date.now() < deadline) {
    last = await page.evaluate(async (p) => (await window.demo.client.mediaStats())[p] || null, peer);
    if (last && (!energy || last.audioEnergy > MIN_ENERGY) && last.audioPackets > 0 && (!video || last.framesDecoded > 0)) {
      const playing = await page.evaluate((p) => {
        const v = document.querySelector(`[data-user="${p}"] video`);
        return !!v && v.readyState >= 2 && v.videoWidth > 0;
      }, peer);
      if (!video || playing) return last;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  fail(`no media from ${peer}: ${JSON.stringify(last)}`);
}

// Waits (bounded) for the Rust test to write a line on stdin.
function waitStdin() {
  return new Promise((resolve) => {
    process.stdin.once('data', resolve);
    setTimeout(resolve, STEP_MS);
  });
}

async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, fullPage: true });
  note(`screenshot saved: ${file}`);
}

// Like openTab, with `query` (e.g. 'relay=1') added to the page's URL.
const openTabWith = openTab;

const scenarios = {
  async 'browser-to-browser'(browser) {
    const a = await openTab(browser, 'web-a');
    const b = await openTab(browser, 'web-b');
    await a.fill('#callee', 'web-b');
    await a.click('#video-call-btn');
    await b.waitForSelector('#incoming:not([hidden])');
    await b.click('#accept-btn');
    await waitEvent(a, 'userEnter', { userID: 'web-b' });
    const atA = await waitMedia(a, 'web-b');
    const atB = await waitMedia(b, 'web-a');
    note(`web-a from web-b: ${JSON.stringify(atA)}; web-b from web-a: ${JSON.stringify(atB)}`);
    // Mute and camera off reach the other side as media_state.
    await b.click('#mute-btn');
    await waitEvent(a, 'userAudioAvailable', { userID: 'web-b', isAudioAvailable: false });
    await b.click('#camera-btn');
    await waitEvent(a, 'userVideoAvailable', { userID: 'web-b', isVideoAvailable: false });
    await b.click('#camera-btn');
    await waitEvent(a, 'userVideoAvailable', { userID: 'web-b', isVideoAvailable: true });
    // USER_VOICE_VOLUME reports web-b's voice; the call timer runs.
    await a.waitForFunction(() => (window.demo.loudest['web-b'] || 0) > 0);
    await a.waitForFunction(() => document.getElementById('call-timer').textContent !== '00:00');
    // The log shows no protocol details until asked to.
    const debugLines = await a.evaluate(() => [
      document.querySelectorAll('#log li.debug').length,
      document.querySelectorAll('#log li.debug:not([hidden])').length,
    ]);
    if (debugLines[0] === 0 || debugLines[1] !== 0) fail(`debug lines (all, shown): ${debugLines}`);
    await a.check('#debug');
    if (await a.evaluate(() => document.querySelectorAll('#log li.debug[hidden]').length) !== 0) fail('the debug switch shows no debug lines');
    await a.uncheck('#debug');
    await screenshot(a, 'in-call.png');
    // stopRemoteView takes the video out of its element; startRemoteView
    // puts it back, playing; the same for the local view.
    await a.evaluate(() => window.demo.trtc.stopRemoteView({ userID: 'web-b', videoViewDomID: 'view-web-b' }));
    if (await a.evaluate(() => !!document.querySelector('#view-web-b video'))) fail('stopRemoteView left the video');
    await a.evaluate(() => window.demo.trtc.startRemoteView({ userID: 'web-b', videoViewDomID: 'view-web-b' }));
    await a.waitForFunction(() => {
      const v = document.querySelector('#view-web-b video');
      return !!v && v.readyState >= 2 && v.videoWidth > 0 && !v.muted;
    });
    await a.evaluate(() => window.demo.trtc.stopLocalView({ userID: 'web-a', videoViewDomID: 'local-view' }));
    if (await a.evaluate(() => !!document.querySelector('#local-view video'))) fail('stopLocalView left the video');
    await a.evaluate(() => window.demo.trtc.startLocalView({ userID: 'web-a', videoViewDomID: 'local-view' }));
    await a.waitForFunction(() => {
      const v = document.querySelector('#local-view video');
      return !!v && v.muted && v.readyState >= 2;
    });
    await a.click('#hangup-btn');
    await waitEvent(a, 'callEnd');
    await waitEvent(b, 'callEnd');
    await waitEvent(b, 'userLeave', { userID: 'web-a' });
    for (const p of [a, b]) {
      if (!(await p.isHidden('#in-call'))) fail('the in-call panel is still shown after the call ended');
    }
    say('MEDIA_OK');
  },

  async group(browser) {
    const a = await openTab(browser, 'web-a');
    const b = await openTab(browser, 'web-b');
    const c = await openTab(browser, 'web-c');
    await a.fill('#callee', 'web-b, web-c');
    await a.click('#video-call-btn');
    for (const p of [b, c]) await p.waitForSelector('#incoming:not([hidden])');
    await b.click('#accept-btn');
    await waitEvent(a, 'userEnter', { userID: 'web-b' });
    await c.click('#accept-btn');
    // Everyone meets everyone (web-b and web-c through the roster / enter
    // exchange) and decodes everyone's video and audio.
    for (const [p, others] of [[a, ['web-b', 'web-c']], [b, ['web-a', 'web-c']], [c, ['web-a', 'web-b']]]) {
      for (const o of others) {
        await waitEvent(p, 'userEnter', { userID: o });
        await waitMedia(p, o);
      }
    }
    await screenshot(c, 'group-call.png');
    // web-a leaves; the call goes on between web-b and web-c.
    await a.click('#hangup-btn');
    await waitEvent(a, 'callEnd');
    await waitEvent(b, 'userLeave', { userID: 'web-a' });
    await waitEvent(c, 'userLeave', { userID: 'web-a' });
    if (await b.evaluate(() => window.demo.events.some((e) => e.type === 'callEnd'))) fail('web-b\'s call ended when web-a left');
    await b.click('#hangup-btn');
    await waitEvent(c, 'callEnd', { reason: 'hangup' });
    say('MEDIA_OK');
  },

  async 'reject-busy-cancel'(browser) {
    const a = await openTab(browser, 'web-a');
    const b = await openTab(browser, 'web-b');
    const c = await openTab(browser, 'web-c');
    // Reject.
    await a.fill('#callee', 'web-b');
    await a.click('#audio-call-btn');
    await b.waitForSelector('#incoming:not([hidden])');
    await b.click('#reject-btn');
    await waitEvent(a, 'reject', { userID: 'web-b' });
    await waitEvent(a, 'callEnd', { reason: 'rejected' });
    await waitEvent(b, 'callEnd', { reason: 'rejected' });
    await waitBanner(a, 'web-b rejected the call');
    note('reject seen');
    // Busy: web-b is in a call with web-c.
    await c.fill('#callee', 'web-b');
    await c.click('#audio-call-btn');
    await b.waitForSelector('#incoming:not([hidden])');
    await b.click('#accept-btn');
    await waitEvent(c, 'userEnter', { userID: 'web-b' });
    await a.click('#audio-call-btn');
    await waitEvent(a, 'lineBusy', { userID: 'web-b' });
    await waitEvent(a, 'callEnd', { reason: 'busy' });
    const shown = await a.textContent('#error');
    if (!shown.includes('web-b is busy')) fail(`the page does not show the busy line: ${shown}`);
    if (await b.evaluate(() => window.demo.events.filter((e) => e.type === 'invited').length) !== 2) {
      fail('web-b was told about the call it answered busy');
    }
    note('busy seen');
    await c.click('#hangup-btn');
    await waitEvent(b, 'callEnd', { reason: 'hangup' });
    // Cancel: web-a hangs up while web-b still rings.
    await a.click('#video-call-btn');
    await b.waitForFunction(() => window.demo.events.filter((e) => e.type === 'invited').length === 3);
    await a.click('#hangup-btn');
    await waitEvent(b, 'callingCancel');
    await waitEvent(b, 'callEnd', { reason: 'cancelled' });
    await waitBanner(b, 'web-a cancelled the call');
    if (!(await b.isHidden('#incoming'))) fail('web-b still shows the incoming call after the cancel');
    if (await b.evaluate(() => window.demo.ringing)) fail('web-b still rings after the cancel');
    note('cancel seen');
    // Offline: the server answers undeliverable, the page says so at once.
    await a.fill('#callee', 'web-offline');
    await a.click('#audio-call-btn');
    await waitEvent(a, 'noResp', { userID: 'web-offline', reason: 'offline' });
    await waitEvent(a, 'callEnd', { reason: 'no_answer' });
    await waitBanner(a, 'web-offline is offline');
    await screenshot(a, 'offline-banner.png');
    note('offline seen');
    say('MEDIA_OK');
  },

  async 'no-answer'(browser) {
    // web-a's calls ring 2 s (?ring_s=2): web-b lets it ring out.
    const a = await openTab(browser, 'web-a', 'ring_s=2');
    const b = await openTab(browser, 'web-b');
    await a.fill('#callee', 'web-b');
    await a.click('#audio-call-btn');
    await b.waitForSelector('#incoming:not([hidden])');
    if (!(await b.evaluate(() => window.demo.ringing))) fail('web-b does not ring');
    await waitEvent(b, 'callingTimeout');
    await waitBanner(b, 'you did not answer in time');
    await waitEvent(a, 'noResp', { userID: 'web-b', reason: 'timeout' });
    await waitBanner(a, 'web-b did not answer');
    if (await b.evaluate(() => window.demo.ringing)) fail('web-b still rings after the timeout');
    say('MEDIA_OK');
  },

  async 'server-restart'(browser) {
    const a = await openTab(browser, 'web-a');
    const b = await openTab(browser, 'web-b');
    say('READY');
    // The server goes away: both pages say so and keep trying.
    for (const p of [a, b]) {
      await p.waitForFunction(() => window.demo.trtc.connectionState === 'reconnecting');
      await waitBanner(p, 'reconnecting');
      if ((await p.textContent('#connection')) !== 'reconnecting…') fail('the status does not say reconnecting');
      if (!(await p.isHidden('#login-panel'))) fail('the page logged out on a lost connection');
      if (!(await p.isDisabled('#video-call-btn'))) fail('the page offers to call while it is not connected');
    }
    await screenshot(a, 'reconnecting.png');
    say('LOST');
    // A new server on the same address: both log in again by themselves.
    for (const p of [a, b]) {
      await p.waitForFunction(() => window.demo.trtc.connectionState === 'connected', null, { timeout: 30_000 });
      await waitBanner(p, 'reconnected');
    }
    note('both reconnected');
    await a.fill('#callee', 'web-b');
    await a.click('#video-call-btn');
    await b.waitForSelector('#incoming:not([hidden])');
    await b.click('#accept-btn');
    await waitMedia(a, 'web-b');
    await waitMedia(b, 'web-a');
    await a.click('#hangup-btn');
    await waitEvent(b, 'callEnd', { reason: 'hangup' });
    say('MEDIA_OK');
  },

  async kick(browser) {
    const first = await openTab(browser, 'web-k');
    const second = await openTab(browser, 'web-k');
    await waitEvent(first, 'kickedOut');
    await waitBanner(first, 'logged in somewhere else');
    if (!(await first.isVisible('#login-panel'))) fail('the kicked page does not show the login form');
    if ((await first.textContent('#whoami')) !== 'not logged in') fail('the kicked page still says it is logged in');
    if (!(await first.isHidden('#call-panel'))) fail('the kicked page still offers to call');
    await screenshot(first, 'kicked-out.png');
    // The second session works: it can be called.
    const caller = await openTab(browser, 'web-c');
    await caller.fill('#callee', 'web-k');
    await caller.click('#audio-call-btn');
    await second.waitForSelector('#incoming:not([hidden])');
    await second.click('#reject-btn');
    await waitEvent(caller, 'reject', { userID: 'web-k' });
    // Logging out shows the logged-out state too.
    await second.click('#logout-btn');
    await second.waitForSelector('#login-panel:not([hidden])');
    if ((await second.textContent('#whoami')) !== 'not logged in') fail('the page still says it is logged in after logout');
    say('MEDIA_OK');
  },

  async 'bad-login'(browser) {
    for (const [sig, want] of [[opts.badsig, 'The UserSig was refused'], [opts.oldsig, 'The UserSig has expired']]) {
      const page = await newPage(browser, 'web-w');
      await page.goto(`${base}/?user=web-w`);
      await page.click('#login-panel summary');
      await page.fill('#sdk-app-id', opts.app);
      await page.fill('#user-sig', sig);
      await page.click('#login-btn');
      await waitBanner(page, want);
      if (!(await page.isVisible('#login-panel'))) fail('the login form is gone after a refused login');
      if ((await page.textContent('#whoami')) !== 'not logged in') fail('the page says it is logged in');
      const shown = await page.textContent('#error');
      if (/\(4001\)/.test(shown)) fail(`the banner shows a close code: ${shown}`);
      note(`shown: ${shown}`);
    }
    await screenshot(pages[pages.length - 1][1], 'bad-usersig.png');
    say('MEDIA_OK');
  },

  async 'switch-to-video'(browser) {
    const a = await openTab(browser, 'web-a');
    const b = await openTab(browser, 'web-b');
    await a.fill('#callee', 'web-b');
    await a.click('#audio-call-btn');
    await b.waitForSelector('#incoming:not([hidden])');
    await b.click('#accept-btn');
    await waitMedia(a, 'web-b', false, { energy: false });
    // First web-b refuses, then accepts.
    await a.click('#switch-video-btn');
    await b.waitForSelector('#switch-ask:not([hidden])');
    await b.click('#switch-refuse-btn');
    await waitEvent(a, 'switchRefused');
    await waitBanner(a, 'did not agree to video');
    await a.click('#switch-video-btn');
    await b.waitForSelector('#switch-ask:not([hidden])');
    await b.click('#switch-accept-btn');
    for (const p of [a, b]) await waitEvent(p, 'callTypeChanged', { newCallType: 2 });
    // Video flows both ways on the m-line the audio call already had.
    await waitMedia(a, 'web-b', true);
    await waitMedia(b, 'web-a', true);
    // The refusal's banner went with the refusal.
    const stale = await a.evaluate(() => {
      const el = document.getElementById('error');
      return !el.hidden && el.textContent.includes('did not agree') ? el.textContent : null;
    });
    if (stale) fail(`a stale banner after the switch: ${stale}`);
    await screenshot(a, 'switched-to-video.png');
    // The camera picker: another camera in the call, video still flows.
    const cameras = await b.evaluate(() => window.demo.trtc.getCameras());
    if (cameras.length === 0) fail('no camera listed');
    const before = (await a.evaluate(async () => (await window.demo.client.mediaStats())['web-b'])).framesDecoded;
    await b.selectOption('#camera-select', cameras[cameras.length - 1].deviceId);
    await a.waitForFunction(async (n) => (await window.demo.client.mediaStats())['web-b'].framesDecoded > n + 10, before);
    note('video goes on with the other camera');
    await b.selectOption('#quality-select', '720p');
    // What the camera is asked for (Chromium's fake camera keeps its own size).
    await b.waitForFunction(() => {
      const t = window.demo.client.active.localStream.getVideoTracks()[0];
      const c = t && t.getConstraints();
      return !!c && c.width === 1280 && c.height === 720;
    });
    await a.click('#hangup-btn');
    await waitEvent(b, 'callEnd', { reason: 'hangup' });
    say('MEDIA_OK');
  },

  async 'join-by-ticket'(browser) {
    const a = await openTab(browser, 'web-a');
    const b = await openTab(browser, 'web-b');
    const c = await openTab(browser, 'web-c');
    await a.fill('#callee', 'web-b');
    await a.click('#video-call-btn');
    await b.waitForSelector('#incoming:not([hidden])');
    await b.click('#accept-btn');
    await waitEvent(a, 'userEnter', { userID: 'web-b' });
    await b.waitForSelector('#ticket-line:not([hidden])');
    const callId = await b.textContent('#ticket-call');
    const ticket = await b.textContent('#ticket-text');
    if (!ticket.startsWith('web-b:')) fail(`web-b's ticket does not name it: ${ticket}`);
    await c.click('#join-box summary');
    await c.fill('#join-call-id', callId);
    await c.fill('#join-ticket', ticket);
    await c.click('#join-btn');
    for (const [p, others] of [[a, ['web-b', 'web-c']], [b, ['web-a', 'web-c']], [c, ['web-a', 'web-b']]]) {
      for (const o of others) {
        await waitEvent(p, 'userEnter', { userID: o });
        await waitMedia(p, o);
      }
    }
    // A made-up secret lets nobody in.
    const d = await openTab(browser, 'web-d');
    await d.click('#join-box summary');
    await d.fill('#join-call-id', callId);
    await d.fill('#join-ticket', 'web-b:not-the-secret');
    await d.click('#join-btn');
    await waitBanner(d, 'did not let us in');
    if (await a.evaluate(() => window.demo.events.some((e) => e.type === 'userEnter' && e.userID === 'web-d'))) fail('web-d got in with a wrong secret');
    // Knowing the call id is not enough: an enter with no invite and no
    // ticket is dropped. web-a's `gone` answer to a later message about
    // another call shows web-a has read the enter (one sender's messages
    // arrive in order).
    await d.evaluate(() => {
      const c = window.demo.client;
      const orig = c.onFrame.bind(c);
      window.rawFrames = [];
      c.onFrame = (data) => { window.rawFrames.push(JSON.parse(data)); orig(data); };
    });
    await d.evaluate((id) => {
      const c = window.demo.client;
      const party = Date.now() * 1024;
      c.sendPayload(['web-a'], { version: 1, call_id: id, party, kind: 'enter', audio: true, video: true });
      c.sendPayload(['web-a'], { version: 1, call_id: 'probe-call', party: party + 1, kind: 'alive' });
    }, callId);
    await d.waitForFunction(() => window.rawFrames.some((f) => f.type === 'message' && f.from === 'web-a'
      && f.payload && f.payload.kind === 'gone' && f.payload.call_id === 'probe-call'));
    const inA = await a.evaluate(() => [...window.demo.client.active.connected.keys()]);
    if (inA.includes('web-d')) fail(`web-d got in by the call id alone: ${inA}`);
    say('MEDIA_OK');
  },

  async 'no-camera'(browser) {
    // web-a's camera cannot be opened: web-b must be told, and audio flows.
    const a = await newPage(browser, 'web-a');
    await a.addInitScript(() => {
      const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
      navigator.mediaDevices.getUserMedia = (c) => (c && c.video
        ? Promise.reject(new DOMException('Permission denied', 'NotAllowedError'))
        : real(c));
    });
    await a.goto(`${base}/?user=web-a`);
    await a.click('#login-btn');
    await a.waitForFunction(() => window.demo && window.demo.trtc && window.demo.trtc.userID);
    const b = await openTab(browser, 'web-b');
    await a.fill('#callee', 'web-b');
    await a.click('#video-call-btn');
    await waitEvent(a, 'localDeviceProblem', { deviceType: 'video' });
    await waitBanner(a, 'cannot open the camera');
    await b.waitForSelector('#incoming:not([hidden])');
    await b.click('#accept-btn');
    await waitMedia(b, 'web-a', false, { energy: false });
    await waitMedia(a, 'web-b', true);
    await b.waitForSelector('.tile.remote[data-user="web-a"].camera-off');
    const member = await b.evaluate(() => window.demo.client.active.connected.get('web-a'));
    if (member.video) fail('web-b was told web-a\'s camera is on');
    await screenshot(b, 'camera-off-mark.png');
    // Mute shows on the other side's tile.
    await a.click('#mute-btn');
    await b.waitForSelector('.tile.remote[data-user="web-a"] .mark.mic-off');
    await a.click('#hangup-btn');
    await waitEvent(b, 'callEnd');
    say('MEDIA_OK');
  },

  async 'example-app'(browser) {
    // The example app on another origin imports the package from the
    // server (CORS) as `calling-web` and calls peer=.
    const root = path.resolve('../../examples/web-app');
    const server = http.createServer((req, res) => {
      const file = path.join(root, new URL(req.url, 'http://x').pathname.replace(/^\/$/, '/index.html'));
      if (!file.startsWith(root)) { res.writeHead(404); res.end(); return; }
      readFile(file).then((body) => {
        res.writeHead(200, { 'content-type': file.endsWith('.js') ? 'text/javascript' : 'text/html' });
        res.end(body);
      }, () => { res.writeHead(404); res.end(); });
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const origin = `http://127.0.0.1:${server.address().port}`;
    try {
      const page = await newPage(browser, opts.user);
      await page.goto(`${origin}/?server=${encodeURIComponent(base)}`);
      await page.fill('#app', opts.app);
      await page.fill('#user', opts.user);
      await page.fill('#sig', opts.sig);
      await page.click('#login');
      await page.waitForFunction(() => document.getElementById('state').textContent === 'logged in');
      say('READY');
      await page.fill('#callee', opts.peer);
      await page.click('#call');
      await page.waitForFunction(() => document.getElementById('state').textContent.startsWith('in a call'));
      await page.waitForFunction(() => {
        const v = document.querySelector('#remote video');
        return !!v && v.readyState >= 2 && v.videoWidth > 0;
      });
      await screenshot(page, 'example-app.png');
      say('MEDIA_OK');
      await waitStdin();
      await page.click('#hangup');
      await page.waitForFunction(() => document.getElementById('state').textContent === 'logged in');
      say('ENDED');
    } finally {
      server.close();
    }
  },

  async 'answer-switch'(browser) {
    // Rust audio-calls user=; the page accepts, then accepts Rust's ask to
    // switch to video, and decodes Rust's video.
    const page = await openTab(browser, opts.user);
    say('READY');
    await page.waitForSelector('#incoming:not([hidden])');
    await page.click('#accept-btn');
    await waitMedia(page, opts.peer, false, { energy: false });
    say('IN_CALL');
    await page.waitForSelector('#switch-ask:not([hidden])');
    await page.click('#switch-accept-btn');
    await waitEvent(page, 'callTypeChanged', { userID: opts.peer, newCallType: 2 });
    const got = await waitMedia(page, opts.peer, true);
    note(`media from ${opts.peer} after the switch: ${JSON.stringify(got)}`);
    say('MEDIA_OK');
    await waitEvent(page, 'callEnd');
    say('ENDED');
  },

  async 'answer-restart'(browser) {
    // In a call with peer= when the server restarts: the page reconnects
    // and the call goes on (media is peer to peer), until peer= hangs up
    // through the new server.
    const page = await openTab(browser, opts.user);
    say('READY');
    await page.waitForSelector('#incoming:not([hidden])');
    await page.click('#accept-btn');
    await waitMedia(page, opts.peer);
    say('MEDIA_OK');
    await page.waitForFunction(() => window.demo.trtc.connectionState === 'reconnecting');
    if (await page.evaluate(() => window.demo.client.active === null)) fail('the call ended when the server went away');
    say('LOST');
    await page.waitForFunction(() => window.demo.trtc.connectionState === 'connected', null, { timeout: 30_000 });
    if (await page.evaluate(() => window.demo.client.active === null)) fail('the call ended while the page reconnected');
    const before = (await page.evaluate(async (p) => (await window.demo.client.mediaStats())[p], opts.peer)).framesDecoded;
    await page.waitForFunction(async ([p, n]) => (await window.demo.client.mediaStats())[p].framesDecoded > n + 10, [opts.peer, before]);
    say('RECONNECTED');
    await waitEvent(page, 'callEnd', { reason: 'hangup' });
    say('ENDED');
  },

  async 'mixed-group'(browser) {
    // web-a calls web-b and the Rust client peer= in one group call.
    const a = await openTab(browser, 'web-a');
    const b = await openTab(browser, 'web-b');
    await a.fill('#callee', `web-b, ${opts.peer}`);
    await a.click('#video-call-btn');
    await b.waitForSelector('#incoming:not([hidden])');
    await b.click('#accept-btn');
    for (const [p, others] of [[a, ['web-b', opts.peer]], [b, ['web-a', opts.peer]]]) {
      for (const o of others) {
        await waitEvent(p, 'userEnter', { userID: o });
        await waitMedia(p, o);
      }
    }
    say('MEDIA_OK');
    await waitStdin();
    for (const p of [a, b]) {
      await p.waitForFunction(() => window.demo.events.some((e) => e.type === 'groupCallInviteeListUpdate' && e.userIDList.includes('web-late')));
    }
    say('INVITEES web-late');
    await a.click('#hangup-btn');
    await waitEvent(a, 'callEnd');
    await waitEvent(b, 'userLeave', { userID: 'web-a' });
    say('A_LEFT');
    await waitEvent(b, 'userLeave', { userID: opts.peer });
    await waitEvent(b, 'callEnd', { reason: 'hangup' });
    say('ENDED');
  },

  async answer(browser) {
    const page = await openTab(browser, opts.user);
    say('READY');
    await page.waitForSelector('#incoming:not([hidden])');
    await page.click('#accept-btn');
    const got = await waitMedia(page, opts.peer, opts.video !== '0');
    note(`media from ${opts.peer}: ${JSON.stringify(got)}`);
    // USER_VOICE_VOLUME reports the Rust client's tone.
    await page.waitForFunction((p) => (window.demo.loudest[p] || 0) > 0, opts.peer);
    await screenshot(page, 'rust-call.png');
    say('MEDIA_OK');
    await waitEvent(page, 'callEnd');
    say('ENDED');
  },

  async 'answer-relay'(browser) {
    const page = await openTabWith(browser, opts.user, 'relay=1');
    if (!(await page.evaluate(() => window.demo.client.relayOnly))) fail('?relay=1 did not set relayOnly');
    const servers = await page.evaluate(() => window.demo.client.iceServers);
    say(`ICE ${JSON.stringify(servers)}`);
    say('READY');
    await page.waitForSelector('#incoming:not([hidden])');
    await page.click('#accept-btn');
    const got = await waitMedia(page, opts.peer, opts.video !== '0');
    note(`media from ${opts.peer}: ${JSON.stringify(got)}`);
    say('MEDIA_OK');
    say(`PAIR ${got.localCandidateType} ${got.remoteCandidateType} ${got.localAddress} ${got.remoteAddress}`);
    // The page renews its TURN credential by itself before it expires.
    const first = JSON.stringify(servers);
    await page.waitForFunction((f) => JSON.stringify(window.demo.client.iceServers) !== f, first, { timeout: 30_000 });
    const fresh = await page.evaluate(() => window.demo.client.iceServers);
    // ...and hands it to the live connection too, for its next ICE restart.
    const live = await page.evaluate(() => {
      const peer = [...window.demo.client.active.peers.values()][0];
      return peer ? peer.pc.getConfiguration().iceServers : null;
    });
    if (!live || JSON.stringify(live.map((s) => s.username)) !== JSON.stringify(fresh.map((s) => s.username))) {
      fail(`the live connection kept its old ICE servers: ${JSON.stringify(live)} vs ${JSON.stringify(fresh)}`);
    }
    say(`REFRESHED ${JSON.stringify(fresh)}`);
    await waitEvent(page, 'callEnd');
    say('ENDED');
  },

  async place(browser) {
    const page = await openTab(browser, opts.user);
    await page.fill('#callee', opts.peer);
    await page.click('#video-call-btn');
    await waitEvent(page, 'userEnter', { userID: opts.peer });
    const got = await waitMedia(page, opts.peer);
    note(`media from ${opts.peer}: ${JSON.stringify(got)}`);
    say('MEDIA_OK');
    // Stay in the call until the Rust side has checked its own media.
    await waitStdin();
    await page.click('#hangup-btn');
    await waitEvent(page, 'callEnd');
    say('ENDED');
  },

  async 'bench-b2b'(browser) {
    // The same figure between two Chromium tabs, for comparison: web-a
    // calls web-b, which answers; web-b's first frame from web-a.
    const a = await openTab(browser, 'web-a');
    const b = await openTab(browser, 'web-b');
    const count = Number(opts.count || 10);
    const all = [];
    for (let i = 0; i < count; i += 1) {
      await a.fill('#callee', 'web-b');
      await a.click('#video-call-btn');
      await b.waitForFunction((n) => window.demo.events.filter((e) => e.type === 'invited').length > n, i);
      await b.click('#accept-btn');
      await b.waitForFunction((n) => window.demo.setups.length > n, i);
      const { ms, connectMs } = await b.evaluate((n) => window.demo.setups[n], i);
      all.push(ms);
      say(`SETUP web-a ${connectMs === null ? 'NaN' : connectMs.toFixed(1)} ${ms.toFixed(1)}`);
      await a.click('#hangup-btn');
      for (const p of [a, b]) await p.waitForFunction((n) => window.demo.events.filter((e) => e.type === 'callEnd').length > n, i);
    }
    all.sort((x, y) => x - y);
    say(`browser <-> browser: n=${all.length} p50=${all[Math.round((all.length - 1) / 2)].toFixed(0)} ms min=${all[0].toFixed(0)} ms max=${all[all.length - 1].toFixed(0)} ms`);
  },

  async bench(browser) {
    const page = await openTab(browser, opts.user);
    say('READY');
    const count = Number(opts.count || 10);
    for (let i = 0; i < count; i += 1) {
      // Counted, not polled for state: the next call may ring before a
      // poll would see this one gone.
      await page.waitForFunction((n) => window.demo.events.filter((e) => e.type === 'invited').length > n, i);
      await page.click('#accept-btn');
      await page.waitForFunction((n) => window.demo.setups.length > n, i);
      const { user, ms, connectMs, peerMs, timeline } = await page.evaluate((n) => window.demo.setups[n], i);
      note(`${user}: first frame ${ms.toFixed(0)} ms after the answer, ${peerMs.toFixed(0)} ms after the peer connection was made: ${timeline} frame@${peerMs.toFixed(0)}`);
      say(`SETUP ${user} ${connectMs === null ? 'NaN' : connectMs.toFixed(1)} ${ms.toFixed(1)}`);
      await page.waitForFunction((n) => window.demo.events.filter((e) => e.type === 'callEnd').length > n, i);
    }
  },
};

async function main() {
  const run = scenarios[scenario];
  if (!run || !base) {
    console.error(`usage: node driver.mjs <${Object.keys(scenarios).join('|')}> <base-url> [key=value...]`);
    process.exit(2);
  }
  const browser = await launch();
  try {
    await run(browser);
    note('passed');
  } catch (e) {
    for (const [user, page] of pages) {
      const text = await page.textContent('#log').catch(() => '?');
      const err = await page.textContent('#error').catch(() => '?');
      note(`${user}'s page: error banner: ${err}\n  log: ${text}`);
    }
    throw e;
  } finally {
    await browser.close().catch(() => {});
  }
}

main().then(() => process.exit(0), (e) => {
  console.error(`[driver ${scenario}] FAILED: ${e.stack || e.message}`);
  process.exit(1);
});
