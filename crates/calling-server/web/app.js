// The web demo's page logic: wires the UI to CallingClient (calling.js).
// `window.demo` exposes the client and a few figures (events seen, first
// frame times) so that the browser tests can read what a person would see.
import { CallingClient } from './calling.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// ?dtls=active keeps Chrome's own DTLS role when answering (for comparison).
// ?relay=1: media through the server's TURN relay only (iceTransportPolicy
// 'relay'), e.g. to keep the users' addresses from each other.
const client = new CallingClient({
  passiveDtls: params.get('dtls') !== 'active',
  relayOnly: params.get('relay') === '1',
  // ?restore_ms=N: how long broken media may take to come back (tests).
  mediaRestoreTimeoutMs: Number(params.get('restore_ms')) || undefined,
});
// setups: one {user, callId, ms, connectMs} per remote video, ms from the answer to
// its first decoded frame.
const demo = { client, events: [], setups: [], errors: [] };
window.demo = demo;

function show(id, on) { $(id).hidden = !on; }

function log(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $('log').prepend(li);
}

function showError(text) {
  demo.errors.push(text);
  $('error').textContent = text;
  show('error', true);
}

function clearError() { show('error', false); }

function record(type, detail) {
  const copy = {};
  for (const [k, v] of Object.entries(detail || {})) if (!(v instanceof MediaStream)) copy[k] = v;
  demo.events.push({ type, ...copy });
}

function refresh() {
  const snap = client.snapshot();
  const loggedIn = !!client.userId;
  show('login-panel', !loggedIn);
  show('call-panel', loggedIn);
  show('incoming', !!snap && snap.state === 'ringing');
  show('in-call', !!snap && snap.state === 'connected');
  $('whoami').textContent = loggedIn ? `logged in as ${client.userId}` : 'not logged in';
  $('audio-call-btn').disabled = !!snap;
  $('video-call-btn').disabled = !!snap;
  if (snap && snap.state === 'connected') {
    const who = snap.connected.length ? `with ${snap.connected.join(', ')}` : `calling ${snap.ringing.join(', ')}…`;
    $('call-status').textContent = `${snap.mediaType} call ${who}`;
    $('mute-btn').textContent = snap.audio ? 'Mute' : 'Unmute';
    $('camera-btn').textContent = snap.video ? 'Camera off' : 'Camera on';
    $('camera-btn').disabled = snap.mediaType !== 'video';
  }
}

function remoteTile(user) {
  let tile = document.querySelector(`[data-user="${CSS.escape(user)}"]`);
  if (!tile) {
    tile = document.createElement('figure');
    tile.className = 'tile remote';
    tile.dataset.user = user;
    // Video muted, audio through its own element: a muted <video> would
    // also silence the remote audio.
    tile.innerHTML = '<video autoplay playsinline muted></video><audio autoplay></audio><figcaption></figcaption>';
    tile.querySelector('figcaption').textContent = user;
    $('videos').append(tile);
  }
  return tile;
}

function dropTile(user) {
  const tile = document.querySelector(`[data-user="${CSS.escape(user)}"]`);
  if (tile) tile.remove();
}

const messages = {
  invited: (d) => `${d.inviter} is calling (${d.mediaType}${d.isGroup ? ', group' : ''})`,
  userEnter: (d) => `${d.user} joined the call`,
  userLeave: (d) => `${d.user} left the call`,
  reject: (d) => `${d.user} rejected the call`,
  lineBusy: (d) => `${d.user} is busy`,
  noResp: (d) => `${d.user} did not answer (${d.reason})`,
  callingCancel: () => 'the call was cancelled',
  callingTimeout: () => 'the call timed out',
  callEnd: (d) => `call ended (${d.reason})`,
  userAudioAvailable: (d) => `${d.user} ${d.available ? 'unmuted' : 'muted'} the microphone`,
  userVideoAvailable: (d) => `${d.user} turned the camera ${d.available ? 'on' : 'off'}`,
  mediaInterrupted: (d) => `media with ${d.user} interrupted: restoring`,
  mediaRestored: (d) => `media with ${d.user} back after ${d.gapMs} ms`,
  mediaFailed: (d) => `media with ${d.user} failed`,
  kickedOut: () => 'logged in elsewhere: kicked out',
  loginExpired: () => 'the UserSig expired: log in again',
  disconnected: (d) => `disconnected from the server (${d.code})`,
};

for (const type of Object.keys(messages)) {
  client.addEventListener(type, (e) => {
    record(type, e.detail);
    log(messages[type](e.detail));
    if (['lineBusy', 'kickedOut', 'loginExpired', 'disconnected'].includes(type)) showError(messages[type](e.detail));
    if (type === 'userLeave') dropTile(e.detail.user);
    if (type === 'callEnd') {
      for (const t of document.querySelectorAll('.tile.remote')) t.remove();
      $('local-video').srcObject = null;
    }
    if (type === 'invited') $('incoming-text').textContent = messages.invited(e.detail);
    refresh();
  });
}

client.addEventListener('log', (e) => log(e.detail.text));
client.addEventListener('error', (e) => {
  record('error', e.detail);
  showError(`${e.detail.code}: ${e.detail.message}`);
});
client.addEventListener('localStream', (e) => {
  $('local-video').srcObject = e.detail.stream;
});
client.addEventListener('remoteStream', (e) => {
  const { user, stream } = e.detail;
  const tile = remoteTile(user);
  const video = tile.querySelector('video');
  const audio = tile.querySelector('audio');
  if (video.srcObject !== stream) video.srcObject = stream;
  if (audio.srcObject !== stream) audio.srcObject = stream;
  if (!tile.dataset.watching && video.requestVideoFrameCallback) {
    tile.dataset.watching = '1';
    video.requestVideoFrameCallback(() => {
      const call = client.active;
      if (call && call.answeredAt !== null) {
        const now = performance.now();
        const ms = now - call.answeredAt;
        const peer = call.peers.get(user);
        // connectMs: answer -> ICE and DTLS connected, part of ms.
        const connectMs = peer && peer.connectedAt !== undefined ? peer.connectedAt - call.answeredAt : null;
        const peerMs = peer ? now - peer.createdAt : null;
        const timeline = peer ? peer.timeline.map(([w, t]) => `${w}@${t}`).join(' ') : '';
        demo.setups.push({ user, callId: call.callId, ms, connectMs, peerMs, timeline });
        log(`first video frame from ${user} ${ms.toFixed(0)} ms after the answer`);
      }
    });
  }
});

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearError();
  const user = $('user-id').value.trim();
  let sdkAppId = $('sdk-app-id').value.trim();
  let sig = $('user-sig').value.trim();
  $('login-btn').disabled = true;
  try {
    if (!sig) {
      const res = await fetch(`/demo/usersig?user_id=${encodeURIComponent(user)}`);
      const body = await res.json().catch(() => ({}));
      if (!res.ok) {
        throw new Error(res.status === 404
          ? 'the server is not in demo mode: enter an SDKAppID and a UserSig'
          : body.message || `UserSig request failed (${res.status})`);
      }
      sdkAppId = body.sdk_app_id;
      sig = body.user_sig;
    }
    client.relayOnly = $('relay-only').checked;
    // An https:// page may only open wss://.
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    await client.login(`${scheme}://${location.host}/ws`, sdkAppId, user, sig);
  } catch (e) {
    showError(`login failed: ${e.message}`);
  } finally {
    $('login-btn').disabled = false;
    refresh();
  }
});

async function placeCall(mediaType) {
  clearError();
  const users = $('callee').value.split(',').map((s) => s.trim()).filter(Boolean);
  try {
    await client.call(users, mediaType, 30);
  } catch (e) {
    showError(`call failed: ${e.message}`);
  }
  refresh();
}

$('audio-call-btn').addEventListener('click', () => placeCall('audio'));
$('video-call-btn').addEventListener('click', () => placeCall('video'));
$('accept-btn').addEventListener('click', async () => { clearError(); await client.accept().catch((e) => showError(e.message)); refresh(); });
$('reject-btn').addEventListener('click', async () => { await client.reject().catch((e) => showError(e.message)); refresh(); });
$('hangup-btn').addEventListener('click', async () => { await client.hangup(); refresh(); });
$('mute-btn').addEventListener('click', () => { client.setMicMute(client.media.audio); refresh(); });
$('camera-btn').addEventListener('click', () => { client.setCamera(!client.media.video); refresh(); });
$('logout-btn').addEventListener('click', async () => { await client.logout(); refresh(); });

if (params.get('user')) $('user-id').value = params.get('user');
$('relay-only').checked = client.relayOnly;
refresh();
