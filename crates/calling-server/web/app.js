// The web demo's page logic, written against the TRTCCalling API
// (trtc-calling.js) as an app would be. `window.demo` exposes the
// TRTCCalling object, its protocol client, the events seen (TRTCCalling's
// names and payloads), the banners shown and the first-frame times, so
// that the browser tests can read what a person would see.
import TRTCCalling from './trtc-calling.js';

const { EVENT, CALL_TYPE } = TRTCCalling;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// ?ring_s=N: how long a call rings (30 s; tests use less).
const ringSecs = Number(params.get('ring_s')) || 30;

// What a refused login means, in words (PROTOCOL "Error codes").
const LOGIN_ERRORS = {
  bad_signature: 'The UserSig was refused: it is malformed, forged or made for another user.',
  sig_expired: 'The UserSig has expired: get a fresh one and log in again.',
  wrong_app: 'The UserSig or SDKAppID is for another app than this server\'s.',
  invalid_user_id: 'That user id is not valid: 1 to 32 letters, digits, - or _.',
  unsupported_version: 'This page and the server speak different protocol versions.',
  connect: 'The server cannot be reached.',
};
const END_REASONS = {
  hangup: 'the call ended', rejected: 'the call was rejected', busy: 'the line was busy',
  no_answer: 'nobody answered', cancelled: 'the call was cancelled', timeout: 'the call was not answered in time',
  disconnected: 'the connection to the server was lost', media_failed: 'the media connection failed',
  join_failed: 'the join failed',
};

let trtc = null;
let sdkAppId = null;
const demo = { trtc: null, client: null, events: [], banners: [], setups: [], errors: [], volumes: {}, loudest: {}, ringing: false, bannerFrom: null };
window.demo = demo;

function show(id, on) { $(id).hidden = !on; }

const debug = () => $('debug').checked;

function log(text, level = 'info') {
  const li = document.createElement('li');
  li.className = level;
  li.hidden = level === 'debug' && !debug();
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $('log').prepend(li);
}

/** The banner: `kind` 'error' (red), 'warn' (yellow) or 'info' (green). */
function banner(text, kind = 'warn', from = null) {
  demo.banners.push({ text, kind });
  if (kind === 'error') demo.errors.push(text);
  demo.bannerFrom = from;
  $('error').textContent = text;
  $('error').className = `banner ${kind}`;
  show('error', true);
}

function clearBanner() {
  demo.bannerFrom = null;
  show('error', false);
}

// ---- the ringtone: two tones, on and off, made with WebAudio ---------------

const ring = { ctx: null, timer: null };
function startRingtone() {
  if (ring.timer) return;
  demo.ringing = true;
  try {
    ring.ctx = ring.ctx || new AudioContext();
    const beep = () => {
      const t = ring.ctx.currentTime;
      for (const [f, at] of [[440, 0], [480, 0], [440, 0.5], [480, 0.5]]) {
        const o = ring.ctx.createOscillator();
        const g = ring.ctx.createGain();
        o.frequency.value = f;
        g.gain.setValueAtTime(0.08, t + at);
        g.gain.setValueAtTime(0, t + at + 0.4);
        o.connect(g).connect(ring.ctx.destination);
        o.start(t + at);
        o.stop(t + at + 0.45);
      }
    };
    beep();
    ring.timer = setInterval(beep, 3000);
  } catch (e) {
    log(`no ringtone: ${e.message}`, 'debug');
    ring.timer = setInterval(() => {}, 3000);
  }
}
function stopRingtone() {
  demo.ringing = false;
  clearInterval(ring.timer);
  ring.timer = null;
}

// ---- the call view ------------------------------------------------------------

let timer = null;
let connectedAt = null;
function startTimer() {
  if (timer) return;
  connectedAt = Date.now();
  timer = setInterval(tick, 1000);
  tick();
}
function tick() {
  // Once a second: the timer, and what the call learnt without an event
  // (a join ticket from a roster).
  if (trtc) refresh();
  const s = connectedAt ? Math.floor((Date.now() - connectedAt) / 1000) : 0;
  $('call-timer').textContent = `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}
function stopTimer() {
  clearInterval(timer);
  timer = null;
  connectedAt = null;
  tick();
}

function tileOf(user) {
  return document.querySelector(`.tile.remote[data-user="${CSS.escape(user)}"]`);
}

function marks(tile, audio, video) {
  tile.classList.toggle('muted', !audio);
  tile.classList.toggle('camera-off', !video);
  const m = tile.querySelector('.marks');
  m.innerHTML = '';
  if (!audio) m.insertAdjacentHTML('beforeend', '<span class="mark mic-off" title="microphone off">mic off</span>');
  if (!video) m.insertAdjacentHTML('beforeend', '<span class="mark cam-off" title="camera off">cam off</span>');
}

function remoteTile(user) {
  let tile = tileOf(user);
  if (tile) return tile;
  tile = document.createElement('figure');
  tile.className = 'tile remote';
  tile.dataset.user = user;
  const view = `view-${user}`;
  tile.innerHTML = '<div class="view"></div><span class="level"><i></i></span><figcaption><span class="name"></span> <span class="marks"></span></figcaption>';
  tile.querySelector('.view').id = view;
  tile.querySelector('.name').textContent = user;
  $('videos').append(tile);
  trtc.startRemoteView({ userID: user, videoViewDomID: view });
  const member = demo.client.active && demo.client.active.connected.get(user);
  const video = demo.client.active && demo.client.active.mediaType === 'video';
  marks(tile, member ? member.audio : true, video && (member ? member.video : true));
  watchFirstFrame(user, tile.querySelector('video'));
  return tile;
}

function watchFirstFrame(user, video) {
  if (!video || !video.requestVideoFrameCallback) return;
  video.requestVideoFrameCallback(() => {
    const call = demo.client.active;
    if (!call || call.answeredAt === null) return;
    const now = performance.now();
    const peer = call.peers.get(user);
    // connectMs: answer -> ICE and DTLS connected, part of ms.
    const connectMs = peer && peer.connectedAt !== undefined ? peer.connectedAt - call.answeredAt : null;
    const peerMs = peer ? now - peer.createdAt : null;
    const timeline = peer ? peer.timeline.map(([w, t]) => `${w}@${t}`).join(' ') : '';
    demo.setups.push({ user, callId: call.callId, ms: now - call.answeredAt, connectMs, peerMs, timeline });
    log(`first video frame from ${user} ${(now - call.answeredAt).toFixed(0)} ms after the answer`, 'debug');
  });
}

function dropTile(user) {
  const tile = tileOf(user);
  if (tile) tile.remove();
}

function refresh() {
  const snap = trtc ? demo.client.snapshot() : null;
  const loggedIn = !!(trtc && trtc.userID);
  show('login-panel', !loggedIn);
  show('call-panel', loggedIn);
  show('incoming', !!snap && snap.state === 'ringing');
  show('in-call', !!snap && (snap.state === 'connected' || snap.state === 'joining'));
  $('whoami').textContent = loggedIn ? `logged in as ${trtc.userID}` : 'not logged in';
  // No call while the connection is down: its invites would be lost.
  const online = !!trtc && trtc.connectionState === 'connected';
  $('audio-call-btn').disabled = !!snap || !online;
  $('video-call-btn').disabled = !!snap || !online;
  $('join-btn').disabled = !!snap || !online;
  if (snap && (snap.state === 'connected' || snap.state === 'joining')) {
    const who = snap.connected.length ? `with ${snap.connected.join(', ')}` : `calling ${snap.ringing.join(', ')}…`;
    $('call-status').textContent = snap.state === 'joining' ? 'joining…' : `${snap.mediaType} call ${who}`;
    $('mute-btn').textContent = snap.audio ? 'Mute' : 'Unmute';
    $('camera-btn').textContent = snap.video ? 'Camera off' : 'Camera on';
    $('camera-btn').disabled = snap.mediaType !== 'video';
    show('switch-video-btn', snap.mediaType === 'audio' && snap.connected.length > 0);
    show('switch-audio-btn', snap.mediaType === 'video' && snap.connected.length > 0);
    const local = $('local-tile');
    marks(local, snap.audio, snap.video && snap.mediaType === 'video');
    const ticket = trtc.getJoinTicket();
    show('ticket-line', !!ticket);
    if (ticket) {
      $('ticket-call').textContent = ticket.callID;
      $('ticket-text').textContent = ticket.ticket;
    }
  }
}

// ---- TRTCCalling events ---------------------------------------------------------

const words = {
  [EVENT.INVITED]: (d) => `${d.sponsor} is calling you (${d.inviteData.callType === CALL_TYPE.VIDEO_CALL ? 'video' : 'audio'}${d.isFromGroup ? `, group with ${d.userIDList.join(', ') || 'you'}` : ''})`,
  [EVENT.USER_ACCEPT]: (d) => `${d.userID} answered`,
  [EVENT.USER_ENTER]: (d) => `${d.userID} joined the call`,
  [EVENT.USER_LEAVE]: (d) => `${d.userID} left the call`,
  [EVENT.REJECT]: (d) => `${d.userID} rejected the call`,
  [EVENT.LINE_BUSY]: (d) => `${d.userID} is busy`,
  [EVENT.NO_RESP]: (d) => (d.reason === 'offline' ? `${d.userID} is offline` : `${d.userID} did not answer`),
  [EVENT.CALLING_CANCEL]: (d) => `${d.userID || 'the caller'} cancelled the call`,
  [EVENT.CALLING_TIMEOUT]: () => 'you did not answer in time',
  [EVENT.CALL_END]: (d) => `${END_REASONS[d.reason] || `the call ended (${d.reason})`}${d.callEnd ? ` after ${d.callEnd} s` : ''}`,
  [EVENT.USER_AUDIO_AVAILABLE]: (d) => `${d.userID} turned the microphone ${d.isAudioAvailable ? 'on' : 'off'}`,
  [EVENT.USER_VIDEO_AVAILABLE]: (d) => `${d.userID} turned the camera ${d.isVideoAvailable ? 'on' : 'off'}`,
  [EVENT.CALL_TYPE_CHANGED]: (d) => `the call is now ${d.newCallType === CALL_TYPE.VIDEO_CALL ? 'a video' : 'an audio'} call`,
  [EVENT.SWITCH_REQUEST]: (d) => `${d.userID} asks to turn on video`,
  [EVENT.SWITCH_REFUSED]: (d) => `${d.userIDList.join(', ') || 'the others'} did not agree to video`,
  [EVENT.KICKED_OUT]: () => 'you logged in somewhere else, so this page was logged out',
  [EVENT.LOGIN_EXPIRED]: (d) => (d.code && d.code !== 'sig_expired' ? `the server refused the login again: ${LOGIN_ERRORS[d.code] || d.code}` : 'your UserSig expired: log in again'),
  [EVENT.LOGGED_OUT]: (d) => ({ logout: 'logged out', kicked_out: 'logged out: you logged in somewhere else' }[d.reason] || `logged out (${d.reason})`),
  [EVENT.MEDIA_INTERRUPTED]: (d) => `the connection with ${d.userID} is interrupted: restoring…`,
  [EVENT.MEDIA_RESTORED]: (d) => `the connection with ${d.userID} is back`,
  [EVENT.MEDIA_FAILED]: (d) => `the connection with ${d.userID} failed`,
  [EVENT.LOCAL_DEVICE_PROBLEM]: (d) => `${d.message}; the others are told your ${d.deviceType === 'video' ? 'camera' : 'microphone'} is off`,
  [EVENT.CONNECTION_STATE_CHANGED]: (d) => ({ reconnecting: 'connection to the server lost: reconnecting…', connected: 'connected to the server', disconnected: 'disconnected from the server', connecting: 'connecting…' }[d.state]),
};

const BANNERS = {
  [EVENT.REJECT]: 'warn', [EVENT.LINE_BUSY]: 'warn', [EVENT.NO_RESP]: 'warn', [EVENT.CALLING_CANCEL]: 'warn',
  [EVENT.CALLING_TIMEOUT]: 'warn', [EVENT.KICKED_OUT]: 'error', [EVENT.LOGIN_EXPIRED]: 'error',
  [EVENT.SWITCH_REFUSED]: 'warn', [EVENT.LOCAL_DEVICE_PROBLEM]: 'error', [EVENT.MEDIA_INTERRUPTED]: 'warn',
};

/** The banners an event makes out of date. */
const OUTDATES = {
  [EVENT.CALL_TYPE_CHANGED]: [EVENT.SWITCH_REFUSED],
  [EVENT.MEDIA_RESTORED]: [EVENT.MEDIA_INTERRUPTED],
};

function onEvent(name, d) {
  if (name === EVENT.USER_VOICE_VOLUME) {
    demo.volumes[d.userID] = d.volume;
    demo.loudest[d.userID] = Math.max(demo.loudest[d.userID] || 0, d.volume);
    const bar = tileOf(d.userID)?.querySelector('.level i');
    if (bar) bar.style.height = `${d.volume}%`;
    return;
  }
  if (name === EVENT.LOG) {
    log(d.text, d.level);
    return;
  }
  demo.events.push({ type: name, ...d });
  if (name === EVENT.ERROR) {
    log(`problem: ${d.message}`, 'info');
    if (!['camera_unavailable', 'microphone_unavailable'].includes(d.code)) banner(d.message, 'error');
    return;
  }
  const text = words[name] && words[name](d);
  if (text) log(text);
  if (BANNERS[name]) banner(text, BANNERS[name], name);
  // A banner about a state that has passed would tell the user something
  // no longer true ("did not agree to video" once the call is a video call).
  if (OUTDATES[name] && OUTDATES[name].includes(demo.bannerFrom)) clearBanner();
  switch (name) {
    case EVENT.INVITED:
      $('incoming-text').textContent = text;
      startRingtone();
      break;
    case EVENT.USER_ENTER:
      remoteTile(d.userID);
      startTimer();
      break;
    case EVENT.USER_LEAVE:
      dropTile(d.userID);
      break;
    case EVENT.USER_AUDIO_AVAILABLE:
    case EVENT.USER_VIDEO_AVAILABLE: {
      const tile = tileOf(d.userID);
      const m = demo.client.active && demo.client.active.connected.get(d.userID);
      if (tile && m) marks(tile, m.audio, m.video && demo.client.active.mediaType === 'video');
      break;
    }
    case EVENT.CALLING_CANCEL:
    case EVENT.CALLING_TIMEOUT:
      stopRingtone();
      break;
    case EVENT.CALL_END:
      stopRingtone();
      stopTimer();
      for (const t of document.querySelectorAll('.tile.remote')) t.remove();
      show('switch-ask', false);
      if (!['hangup', 'rejected', 'busy', 'cancelled', 'no_answer', 'timeout'].includes(d.reason)) banner(text, 'error');
      break;
    case EVENT.SWITCH_REQUEST:
      $('switch-text').textContent = text;
      $('switch-ask').dataset.request = String(d.requestID);
      show('switch-ask', true);
      break;
    case EVENT.CALL_TYPE_CHANGED:
      for (const t of document.querySelectorAll('.tile.remote')) {
        const m = demo.client.active && demo.client.active.connected.get(t.dataset.user);
        if (m) marks(t, m.audio, m.video && d.newCallType === CALL_TYPE.VIDEO_CALL);
      }
      break;
    case EVENT.CONNECTION_STATE_CHANGED:
      $('connection').dataset.state = d.state;
      $('connection').textContent = { connected: 'online', reconnecting: 'reconnecting…', connecting: 'connecting…', disconnected: 'offline' }[d.state];
      if (d.state === 'reconnecting') banner(text, 'warn');
      if (d.state === 'connected' && d.prevState === 'reconnecting') banner('reconnected to the server', 'info');
      break;
    case EVENT.KICKED_OUT:
    case EVENT.LOGGED_OUT:
      stopRingtone();
      stopTimer();
      for (const t of document.querySelectorAll('.tile.remote')) t.remove();
      if (d.reason === 'logout') clearBanner();
      else if (name === EVENT.LOGGED_OUT && d.reason !== 'kicked_out' && d.reason !== 'login_expired' && d.reason !== 'login_refused') banner(text, 'error');
      break;
    default:
  }
  refresh();
}

function makeClient(appId) {
  if (trtc && sdkAppId === appId) return trtc;
  trtc = new TRTCCalling({
    SDKAppID: appId,
    // ?dtls=active keeps Chrome's own DTLS role when answering (for comparison).
    passiveDtls: params.get('dtls') !== 'active',
    // ?relay=1: media through the server's TURN relay only.
    relayOnly: params.get('relay') === '1' || $('relay-only').checked,
    // ?restore_ms=N: how long broken media may take to come back (tests).
    mediaRestoreTimeoutMs: Number(params.get('restore_ms')) || undefined,
  });
  sdkAppId = appId;
  demo.trtc = trtc;
  demo.client = trtc.client;
  for (const name of Object.values(EVENT)) trtc.on(name, (d) => onEvent(name, d));
  return trtc;
}

async function fillDevices() {
  if (!trtc) return;
  for (const [id, list] of [['camera-select', await trtc.getCameras()], ['mic-select', await trtc.getMicrophones()]]) {
    const sel = $(id);
    const keep = sel.value;
    sel.innerHTML = '<option value="">default</option>';
    list.forEach((d, i) => {
      const o = document.createElement('option');
      o.value = d.deviceId;
      o.textContent = d.label || `${id === 'camera-select' ? 'camera' : 'microphone'} ${i + 1}`;
      sel.append(o);
    });
    sel.value = keep;
  }
}

// ---- the forms and buttons ----------------------------------------------------

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearBanner();
  const user = $('user-id').value.trim();
  let appId = $('sdk-app-id').value.trim();
  let sig = $('user-sig').value.trim();
  $('login-btn').disabled = true;
  try {
    if (!sig) {
      const res = await fetch(`/demo/usersig?user_id=${encodeURIComponent(user)}`);
      const body = await res.json().catch(() => ({}));
      if (!res.ok) {
        throw new Error(res.status === 404
          ? 'This server is not in demo mode: enter an SDKAppID and a UserSig.'
          : body.message || `UserSig request failed (${res.status})`);
      }
      appId = body.sdk_app_id;
      sig = body.user_sig;
    }
    await makeClient(Number(appId)).login({ userID: user, userSig: sig });
    fillDevices().catch(() => {});
  } catch (e) {
    const why = LOGIN_ERRORS[e.code] || e.message;
    demo.events.push({ type: 'loginFailed', code: e.code || null, message: why });
    banner(`Login failed. ${why}`, 'error');
  } finally {
    $('login-btn').disabled = false;
    refresh();
  }
});

async function run(what, action) {
  try {
    await action();
  } catch (e) {
    banner(`${what}: ${e.message}`, 'error');
  }
  refresh();
}

async function placeCall(type) {
  clearBanner();
  const users = $('callee').value.split(',').map((s) => s.trim()).filter(Boolean);
  await run('The call failed', async () => {
    await trtc.startLocalView({ userID: trtc.userID, videoViewDomID: 'local-view' });
    if (users.length === 1) await trtc.call({ userID: users[0], type, timeout: ringSecs });
    else await trtc.groupCall({ userIDList: users, type, timeout: ringSecs });
  });
}

$('audio-call-btn').addEventListener('click', () => placeCall(CALL_TYPE.AUDIO_CALL));
$('video-call-btn').addEventListener('click', () => placeCall(CALL_TYPE.VIDEO_CALL));
$('accept-btn').addEventListener('click', () => {
  clearBanner();
  stopRingtone();
  run('Cannot accept', async () => {
    await trtc.startLocalView({ userID: trtc.userID, videoViewDomID: 'local-view' });
    await trtc.accept({ inviteID: demo.client.active && demo.client.active.inviteId });
  });
});
$('reject-btn').addEventListener('click', () => {
  stopRingtone();
  run('Cannot reject', () => trtc.reject({ inviteID: demo.client.active && demo.client.active.inviteId }));
});
$('hangup-btn').addEventListener('click', () => run('Hang-up failed', () => trtc.hangup()));
$('mute-btn').addEventListener('click', () => run('Mute failed', async () => trtc.setMicMute(demo.client.media.audio)));
$('camera-btn').addEventListener('click', () => run('Camera failed', () => (demo.client.media.video ? trtc.closeCamera() : trtc.openCamera())));
$('switch-video-btn').addEventListener('click', () => {
  clearBanner();
  run('Switch failed', () => trtc.switchToVideoCall());
});
$('switch-audio-btn').addEventListener('click', () => {
  clearBanner();
  run('Switch failed', () => trtc.switchToAudioCall());
});
for (const [id, accept] of [['switch-accept-btn', true], ['switch-refuse-btn', false]]) {
  $(id).addEventListener('click', () => {
    show('switch-ask', false);
    run('Cannot answer', async () => trtc.answerSwitch({ requestID: Number($('switch-ask').dataset.request), accept }));
  });
}
$('join-btn').addEventListener('click', () => {
  clearBanner();
  run('The join failed', async () => {
    await trtc.startLocalView({ userID: trtc.userID, videoViewDomID: 'local-view' });
    await trtc.joinCall({ callID: $('join-call-id').value.trim(), ticket: $('join-ticket').value.trim() });
  });
});
$('logout-btn').addEventListener('click', () => run('Logout failed', () => trtc.logout()));
$('camera-select').addEventListener('change', (e) => run('Cannot use that camera', () => trtc.switchDevice({ deviceType: 'video', deviceId: e.target.value || 'default' })));
$('mic-select').addEventListener('change', (e) => run('Cannot use that microphone', () => trtc.switchDevice({ deviceType: 'audio', deviceId: e.target.value || 'default' })));
$('quality-select').addEventListener('change', (e) => run('Cannot set the quality', () => trtc.setVideoQuality(e.target.value)));
$('debug').addEventListener('change', () => {
  for (const li of document.querySelectorAll('#log li.debug')) li.hidden = !debug();
});

if (params.get('user')) $('user-id').value = params.get('user');
if (params.get('debug') === '1') $('debug').checked = true;
$('relay-only').checked = params.get('relay') === '1';
refresh();
