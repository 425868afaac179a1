// Manual interoperability check: headless Chromium <-> calling-media.
//
// Needs Chromium (Debian package `chromium`) and `playwright-core` from npm
// (never `npx playwright install`):
//
//   cargo build -p calling-media --example stdio_peer
//   npm install --prefix /tmp/interop playwright-core
//   NODE_PATH=/tmp/interop/node_modules node crates/calling-media/examples/browser-interop.mjs \
//       <path to target>/debug/examples/stdio_peer [browser-offers|rust-offers]
//
// The browser sends its fake camera and microphone, the Rust side its tone
// and test pattern. After a few seconds both sides report what they got:
// the browser decoded frames, picture size and audio energy of the Rust
// media, and the Rust side the frames and voice volumes of the browser's.
// Exits non-zero when either direction carried nothing.

import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const binary = process.argv[2];
const mode = process.argv[3] ?? 'browser-offers';
// The byte-wise lower user id offers.
const [browserId, rustId] = mode === 'rust-offers' ? ['zz-browser', 'rust'] : ['browser', 'rust'];
const browserOffers = browserId < rustId;

// playwright gives the browser a fresh, empty profile directory itself.
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
const page = await browser.newPage();
page.on('console', (m) => console.error('[page]', m.text()));

const rust = spawn(binary, [rustId, browserId, '8'], { stdio: ['pipe', 'pipe', 'inherit'] });
let report = null;
// Signals from Rust wait until the page can take them, and keep their order.
let markReady;
let toPage = new Promise((resolve) => { markReady = resolve; });
createInterface({ input: rust.stdout }).on('line', (line) => {
  const msg = JSON.parse(line);
  if (process.env.VERBOSE) console.error('rust ->', line.slice(0, 120));
  if (msg.signal) toPage = toPage.then(() => page.evaluate((s) => window.onSignal(s), msg.signal));
  if (msg.report) report = msg.report;
});
const rustDone = new Promise((resolve) => rust.on('exit', resolve));

await page.exposeFunction('sendSignal', (s) => {
  if (process.env.VERBOSE) console.error('browser ->', JSON.stringify(s).slice(0, 120));
  rust.stdin.write(JSON.stringify(s) + '\n');
});
// getUserMedia needs a secure context: serve the page from localhost.
const server = createServer((_, res) => {
  res.setHeader('content-type', 'text/html');
  res.end('<video id="v" autoplay playsinline muted></video><audio id="a" autoplay></audio>');
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
await page.goto(`http://localhost:${server.address().port}/`);
await page.evaluate(async (offer) => {
  const pc = new RTCPeerConnection();
  window.pc = pc;
  const local = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
  for (const t of local.getTracks()) pc.addTrack(t, local);
  pc.onicecandidate = (e) => {
    if (e.candidate && e.candidate.candidate) {
      window.sendSignal({
        type: 'candidate', candidate: e.candidate.candidate, sdp_mid: e.candidate.sdpMid,
        sdp_mline_index: e.candidate.sdpMLineIndex, username_fragment: e.candidate.usernameFragment,
      });
    }
  };
  pc.ontrack = (e) => {
    const el = document.getElementById(e.track.kind === 'video' ? 'v' : 'a');
    el.srcObject = new MediaStream([e.track]);
  };
  // Apply signals strictly in order.
  let chain = Promise.resolve();
  window.onSignal = (s) => {
    chain = chain.then(async () => {
      if (s.type === 'offer') {
        await pc.setRemoteDescription({ type: 'offer', sdp: s.sdp });
        const answer = await pc.createAnswer();
        await pc.setLocalDescription(answer);
        window.sendSignal({ type: 'answer', sdp: answer.sdp });
      } else if (s.type === 'answer') {
        await pc.setRemoteDescription({ type: 'answer', sdp: s.sdp });
      } else if (s.type === 'candidate') {
        await pc.addIceCandidate({
          candidate: s.candidate, sdpMid: s.sdp_mid, sdpMLineIndex: s.sdp_mline_index,
          usernameFragment: s.username_fragment,
        });
      }
    }).catch((e) => console.error('signal failed: ' + e));
    return chain;
  };
  if (offer) {
    const o = await pc.createOffer();
    await pc.setLocalDescription(o);
    window.sendSignal({ type: 'offer', sdp: o.sdp });
  }
}, browserOffers);
markReady();

await rustDone;
const seen = await page.evaluate(async () => {
  const stats = await window.pc.getStats();
  const out = { codecs: {} };
  const codecs = {};
  stats.forEach((r) => { if (r.type === 'codec') codecs[r.id] = r.mimeType; });
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp') {
      out[r.kind] = {
        packetsReceived: r.packetsReceived, framesDecoded: r.framesDecoded,
        frameWidth: r.frameWidth, frameHeight: r.frameHeight,
        totalAudioEnergy: r.totalAudioEnergy, audioLevel: r.audioLevel,
        codec: codecs[r.codecId],
      };
    }
  });
  const v = document.getElementById('v');
  out.videoElement = { width: v.videoWidth, height: v.videoHeight };
  out.connectionState = window.pc.connectionState;
  return out;
});
await browser.close();
server.close();

console.log(JSON.stringify({ mode, browser: seen, rust: report }, null, 2));
const browserGotMedia = (seen.video?.framesDecoded ?? 0) > 0 && (seen.audio?.totalAudioEnergy ?? 0) > 0;
const rustGotMedia = report && Object.keys(report.frames_from_remote).length >= 2;
process.exit(browserGotMedia && rustGotMedia ? 0 : 1);
