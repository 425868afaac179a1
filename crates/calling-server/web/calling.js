// calling.js: a small browser client for calling-server, written against
// docs/PROTOCOL.md (session layer + call layer) with the browser's own
// WebSocket and RTCPeerConnection. It implements the subset of the call
// rules the web demo needs: 1v1 and group ringing, accept, reject, busy
// auto-reply, cancel, timeout, hang-up, mute / camera (media_state), enter /
// roster / leave / gone, and media negotiation (kind "media").
//
// Usage:
//   const client = new CallingClient();
//   client.addEventListener('invited', (e) => client.accept());
//   await client.login('ws://127.0.0.1:8080/ws', sdkAppId, 'alice', userSig);
//   await client.call(['bob'], 'video', 30);
//
// Options: iceServers (a fixed RTCIceServer list instead of the server's),
// relayOnly (iceTransportPolicy 'relay': media only through TURN),
// mediaConstraints, passiveDtls, mediaRestoreTimeoutMs (how long a broken
// media connection may take to come back by ICE restart, 15000),
// reconnectGraceMs (how long a connected party whose signaling connection
// died may take to come back before it counts as gone, 10000).
//
// Events (CustomEvent, data in `detail`): login, invited, userEnter,
// userLeave, reject, lineBusy, noResp, callingCancel, callingTimeout,
// callEnd, userAudioAvailable, userVideoAvailable, remoteStream,
// localStream, mediaInterrupted {user, callId}, mediaRestored {user,
// callId, gapMs}, mediaFailed {user, callId} (PROTOCOL "ICE restart and
// media failure": when media failed with every connected party the call
// is left and ends with reason 'media_failed'), kickedOut, loginExpired,
// disconnected, error, log.

const CALL_VERSION = 1;
const SESSION_VERSION = 1;
const KINDS = new Set([
  'invite', 'cancel', 'enter', 'reject', 'timeout', 'leave', 'roster', 'gone',
  'media_state', 'media_type', 'switch_request', 'switch_answer', 'media', 'alive',
]);
// PROTOCOL "Liveness": connected members send `alive` this often, and drop a
// member silent for three times as long.
const KEEPALIVE_MS = 5000;
const INVITER_GRACE_S = 5;
// PROTOCOL "ICE servers and their refresh": ask at 70-80 % of the earliest
// TURN credential's remaining lifetime, at least this late (ms).
const ICE_REFRESH_MIN_MS = 1000;
const ICE_REFRESH_MAX_BACKOFF_MS = 60000;
const ICE_REFRESH_TIMEOUT_MS = 5000;
// PROTOCOL "ICE restart and media failure": restart (or, as the answerer,
// ask for one) at once, again after 2 s, then after doubling waits of at
// most 8 s, within the restore bound.
const RESTART_FIRST_WAIT_MS = 2000;
const RESTART_MAX_WAIT_MS = 8000;
const MEDIA_RESTORE_TIMEOUT_MS = 15000;
// A `restart` ask is served by a restart offered this recently, or by an
// unanswered one this young (still on its way).
const RESTART_SERVED_MS = 900;
const RESTART_IN_FLIGHT_MS = 3000;
// PROTOCOL "Reconnecting": a connected party whose connection died.
const RECONNECT_GRACE_MS = 10000;
// Call-layer frames written while the socket is down wait for the
// re-login, at most this many and for at most the others' reconnect
// grace: past it they have given up on us and the frame means nothing.
const OUTBOX_MAX = 64;
const OUTBOX_MAX_AGE_MS = RECONNECT_GRACE_MS;
// PROTOCOL "Reconnecting": the first wait, and the most it doubles to.
const RECONNECT_FIRST_MS = 100;
const RECONNECT_MAX_MS = 5000;
// PROTOCOL "Join with a ticket": with no answer from the host in 10 s the join fails.
const JOIN_TIMEOUT_MS = 10000;
// How long a switch to video waits for the others' answers.
const SWITCH_TIMEOUT_MS = 30000;
// Call-layer user ids (TRTCCalling's rule).
const CALL_USER_RE = /^[A-Za-z0-9_-]{1,32}$/;

/** A typed error: `code` is a stable string, `message` is for people. */
export class CallingError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'CallingError';
    this.code = code;
  }
}

/**
 * The wait before reconnect attempt `attempt` (0 first), in ms: drawn
 * uniformly from [d/2, d], where d starts at 100 ms and doubles per failed
 * attempt up to 5 s (PROTOCOL "Reconnecting", as the Rust SDK does).
 * `random` is a function returning [0, 1), Math.random by default.
 */
export function reconnectDelay(attempt, random = Math.random) {
  const n = Number.isInteger(attempt) && attempt > 0 ? attempt : 0;
  const d = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** Math.min(n, 16));
  return Math.round(d / 2 + (d / 2) * random());
}

function uuid() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export class CallingClient extends EventTarget {
  constructor(options = {}) {
    super();
    this.ws = null;
    // The credentials of the open session, kept to log in again after a
    // lost connection: {url, sdkAppId, userId, userSig, attempt, timer, lostAt}.
    this.session = null;
    this.userId = null;
    this.nextFrameId = 1;
    this.pending = new Map(); // frame id -> {resolve, reject, what}
    this.sendTargets = new Map(); // send id -> {kind, users}
    this.outbox = []; // [{frame, at}]: sends held while reconnecting
    this.heartbeat = null;
    this.lastHeard = 0;
    this.lastPartyMs = 0;
    this.partySeq = 0;
    this.overMark = new Map(); // user -> highest party known to be over
    this.answered = new Set(); // invite ids answered, cancelled or timed out
    this.earlyCancels = new Set(); // cancels that overtook their invite
    this.active = null;
    this.media = { audio: true, video: true };
    this.mediaConstraints = options.mediaConstraints || null;
    // The camera's size (setVideoProfile) and the chosen devices (useDevice).
    this.videoProfile = { width: 640, height: 480 };
    this.devices = { audio: null, video: null };
    // An app-given list wins; otherwise the server's, from login_ok and
    // every ice_servers answer.
    this.fixedIceServers = options.iceServers || null;
    this.iceServers = this.fixedIceServers || [];
    this.relayOnly = !!options.relayOnly;
    this.iceRefresh = { timer: null, awaiting: null, failures: 0, earliest: null };
    // Answer offers with a=setup:passive (RFC 5763 lets the answerer pick),
    // so the offerer starts DTLS once its own ICE is ready. With Chrome's
    // default (active) Chrome's first ClientHello reaches a webrtc-rs
    // offerer before its DTLS listens and waits for a retransmit: about
    // 50 ms more setup (docs/BENCHMARKS.md, Browser).
    this.passiveDtls = options.passiveDtls !== false;
    const restore = options.mediaRestoreTimeoutMs;
    this.mediaRestoreTimeoutMs = typeof restore === 'number' && restore > 0 ? restore : MEDIA_RESTORE_TIMEOUT_MS;
    // 0: a party whose connection died counts as gone at once.
    const grace = options.reconnectGraceMs;
    this.reconnectGraceMs = typeof grace === 'number' && grace >= 0 ? grace : RECONNECT_GRACE_MS;
  }

  // ---- logging and events ------------------------------------------------

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /**
   * A line for the log: `level` 'info' for what a person wants to read
   * (logged in, calling, accepted), 'debug' for the protocol's details.
   */
  log(text, level = 'debug') {
    this.emit('log', { text, level });
  }

  fail(code, message) {
    this.emit('error', { code, message });
    return new CallingError(code, message);
  }

  // ---- session layer -----------------------------------------------------

  /**
   * Connects to `url` (ws://host:port/ws) and logs in. Resolves with
   * login_ok; rejects with a CallingError whose `code` is the server's
   * (`bad_signature`, `sig_expired`, `wrong_app`, ...) or `connect`.
   * A connection lost later is reconnected with backoff and the same
   * UserSig (PROTOCOL "Reconnecting"), unless the server kicked the user
   * out (4002), the UserSig expired (4003) or the re-login was refused.
   */
  login(url, sdkAppId, userId, userSig) {
    if (this.session) return Promise.reject(new CallingError('already_logged_in', 'already logged in'));
    this.session = { url, sdkAppId: Number(sdkAppId), userId, userSig, attempt: 0, timer: null, lostAt: null };
    return this.connect().catch((e) => {
      this.endSession();
      throw e;
    });
  }

  /** Opens the socket and logs in with the session's credentials. */
  connect() {
    const session = this.session;
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(session.url);
      } catch (e) {
        reject(this.fail('connect', `cannot open ${session.url}: ${e.message}`));
        return;
      }
      this.ws = ws;
      let settled = false;
      let refused = null;
      ws.onopen = () => {
        const id = String(this.nextFrameId++);
        this.pending.set(id, {
          what: 'login',
          resolve: (frame) => {
            settled = true;
            this.onLoggedIn(frame);
            resolve(frame);
          },
          reject: (err) => {
            refused = err;
          },
        });
        this.sendFrame({
          type: 'login', id, sdk_app_id: session.sdkAppId, user_id: session.userId,
          user_sig: session.userSig, protocol: SESSION_VERSION,
        });
      };
      ws.onmessage = (ev) => this.onFrame(ev.data);
      ws.onerror = () => this.log('websocket error');
      ws.onclose = (ev) => {
        if (this.ws === ws) this.ws = null;
        if (settled) {
          this.onClosed(ev.code, ev.reason);
        } else {
          this.stopTimers();
          reject(refused || new CallingError('connect', `connection closed (${ev.code}) before login`));
        }
      };
    });
  }

  onLoggedIn(frame) {
    const session = this.session;
    const again = this.userId !== null;
    this.userId = frame.user_id;
    session.attempt = 0;
    session.lostAt = null;
    this.lastHeard = performance.now();
    const every = Math.max(500, Number(frame.heartbeat_interval_ms) || 3000);
    const deadAfter = Math.max(every, Number(frame.heartbeat_timeout_ms) || 10000);
    clearInterval(this.keepalive);
    this.keepalive = setInterval(() => this.sendAlive(), KEEPALIVE_MS);
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => {
      // PROTOCOL "Heartbeats": nothing (a pong included) for
      // heartbeat_timeout_ms means the server is gone.
      if (performance.now() - this.lastHeard > deadAfter && this.ws) {
        this.log('the server went silent');
        const ws = this.ws;
        ws.onclose = null;
        ws.close();
        this.ws = null;
        this.onClosed(4004, 'server silent');
        return;
      }
      this.sendFrame({ type: 'ping' });
    }, every);
    this.takeIceServers(frame.ice_servers, true);
    if (again) {
      // Back in the call's room, so that the others hear of us again.
      const call = this.active;
      if (call && call.joinedRoom) this.roomRequest('join', call.callId, this.joinFields(call));
      this.flushOutbox();
      this.log(`reconnected as ${frame.user_id}`, 'info');
      this.emit('reconnected', { userId: frame.user_id });
    } else {
      this.log(`logged in as ${frame.user_id}`, 'info');
      this.emit('login', { userId: frame.user_id });
    }
  }

  /** Hangs up any call, logs out and closes the socket. */
  async logout() {
    if (this.active) await this.hangup();
    this.sendFrame({ type: 'logout' });
    this.endSession();
    this.emit('loggedOut', { reason: 'logout' });
  }

  /** Whether a session is open or being restored. */
  get loggedIn() {
    return this.session !== null && this.userId !== null;
  }

  /** Whether the socket is down and a reconnect is pending. */
  get reconnecting() {
    return !!this.session && this.session.lostAt !== null;
  }

  endSession() {
    if (this.session) clearTimeout(this.session.timer);
    this.session = null;
    this.userId = null;
    this.outbox = [];
    this.closeSocket();
  }

  // ---- ICE servers ------------------------------------------------------

  /** The RTCPeerConnection configuration for new peers. */
  rtcConfiguration() {
    const config = { iceServers: this.iceServers };
    if (this.relayOnly) config.iceTransportPolicy = 'relay';
    return config;
  }

  /**
   * Uses `list` (login_ok's or ice_servers' `ice_servers`) from now on, and
   * schedules its refresh. Returns false when it is not newer than the
   * list in use (a late answer), which then stays.
   */
  takeIceServers(list, fromLogin = false) {
    const servers = Array.isArray(list) ? list : [];
    const expiries = servers.map((s) => Number(s.expires_at)).filter((e) => e > 0);
    const earliest = expiries.length ? Math.min(...expiries) : null;
    const r = this.iceRefresh;
    // A login's list always replaces the one in use (a re-login's too).
    if (!fromLogin && earliest !== null && r.earliest !== null && earliest <= r.earliest) return false;
    r.earliest = earliest;
    r.failures = 0;
    r.awaiting = null;
    clearTimeout(r.timer);
    r.timer = null;
    if (!this.fixedIceServers) {
      // The browser's RTCIceServer shape: expires_at is ours only.
      this.iceServers = servers.map((s) => {
        const out = { urls: s.urls };
        if (s.username !== undefined && s.username !== null) out.username = s.username;
        if (s.credential !== undefined && s.credential !== null) out.credential = s.credential;
        return out;
      });
      // Live connections keep their allocations; the new list is for their
      // next ICE restart.
      for (const peer of this.active ? this.active.peers.values() : []) {
        try {
          peer.pc.setConfiguration({ ...peer.pc.getConfiguration(), iceServers: this.iceServers });
        } catch (e) {
          this.log(`cannot update the ICE servers of a live connection: ${e.message}`);
        }
      }
    }
    if (earliest !== null) {
      const leftMs = earliest * 1000 - Date.now();
      const wait = Math.max(ICE_REFRESH_MIN_MS, leftMs * (0.8 - 0.1 * Math.random()));
      this.scheduleIceRefresh(Math.min(wait, 86400000));
    }
    return true;
  }

  scheduleIceRefresh(ms) {
    const r = this.iceRefresh;
    clearTimeout(r.timer);
    r.timer = setTimeout(() => this.sendIceRefresh(), ms);
  }

  sendIceRefresh() {
    const r = this.iceRefresh;
    const id = `ice${this.nextFrameId++}`;
    r.awaiting = id;
    r.timer = setTimeout(() => {
      if (r.awaiting === id) this.iceRefreshFailed('no answer');
    }, ICE_REFRESH_TIMEOUT_MS);
    if (!this.sendFrame({ type: 'ice_refresh', id })) this.iceRefreshFailed('not connected');
  }

  iceRefreshFailed(why) {
    const r = this.iceRefresh;
    r.awaiting = null;
    r.failures += 1;
    const wait = Math.min(ICE_REFRESH_MAX_BACKOFF_MS, ICE_REFRESH_MIN_MS * 2 ** (r.failures - 1));
    this.log(`ice_refresh failed (${why}); again in ${wait} ms`);
    this.scheduleIceRefresh(wait);
  }

  stopIceRefresh() {
    const r = this.iceRefresh;
    clearTimeout(r.timer);
    this.iceRefresh = { timer: null, awaiting: null, failures: 0, earliest: null };
  }

  stopTimers() {
    this.stopIceRefresh();
    clearInterval(this.heartbeat);
    this.heartbeat = null;
    clearInterval(this.keepalive);
    this.keepalive = null;
  }

  closeSocket() {
    this.stopTimers();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.close();
    }
  }

  /** The logged-in socket closed with `code` (PROTOCOL "Close codes"). */
  onClosed(code, reason) {
    this.stopTimers();
    this.ws = null;
    this.log(`disconnected (${code}${reason ? ` ${reason}` : ''})`);
    const final = code === 1000 || code === 4001 || code === 4002 || code === 4003;
    if (final || !this.session) {
      if (this.active) this.endCall('disconnected');
      if (code === 4002) this.emit('kickedOut', {});
      else if (code === 4003) this.emit('loginExpired', {});
      this.emit('disconnected', { code, reason, final: true });
      this.endSession();
      this.emit('loggedOut', { reason: code === 4002 ? 'kicked_out' : code === 4003 ? 'login_expired' : 'closed' });
      return;
    }
    this.emit('disconnected', { code, reason, final: false });
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    const session = this.session;
    if (!session) return;
    if (session.lostAt === null) session.lostAt = performance.now();
    const delayMs = reconnectDelay(session.attempt);
    session.attempt += 1;
    this.emit('reconnecting', { attempt: session.attempt, delayMs });
    this.log(`reconnecting in ${delayMs} ms (attempt ${session.attempt})`);
    clearTimeout(session.timer);
    session.timer = setTimeout(() => this.reconnectNow(session), delayMs);
    // A call cannot wait for ever: past the grace the others count us gone.
    const call = this.active;
    if (call && performance.now() - session.lostAt > this.reconnectGraceMs) this.endCall('disconnected');
  }

  async reconnectNow(session) {
    if (this.session !== session) return;
    try {
      await this.connect();
    } catch (e) {
      if (this.session !== session) return;
      const refused = e instanceof CallingError && e.code !== 'connect';
      if (refused) {
        // PROTOCOL "Reconnecting": a refused re-login ends the session.
        this.fail(e.code, `the server refused the login again: ${e.message}`);
        if (this.active) this.endCall('disconnected');
        this.endSession();
        this.emit('loginExpired', { code: e.code });
        this.emit('loggedOut', { reason: 'login_refused', code: e.code });
        return;
      }
      this.scheduleReconnect();
    }
  }

  sendFrame(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Sends a call-layer payload to `users`; returns the send id. */
  sendPayload(users, payload) {
    const to = [...new Set(users)].filter((u) => u !== this.userId);
    if (to.length === 0) return null;
    const id = `m${this.nextFrameId++}`;
    this.sendTargets.set(id, { kind: payload.kind, callId: payload.call_id, users: to });
    if (this.sendTargets.size > 256) {
      this.sendTargets.delete(this.sendTargets.keys().next().value);
    }
    const frame = { type: 'send', id, to, payload };
    if (!this.sendFrame(frame)) this.hold(frame);
    return id;
  }

  /**
   * Keeps `frame` for the re-login when the socket is down: a hangup,
   * accept or cancel written during a reconnect is sent once it is back,
   * not lost. Without a session (logged out) there is nothing to wait for.
   */
  hold(frame, at = performance.now()) {
    const what = `${frame.payload.kind} to ${frame.to.join(',')}`;
    if (!this.session) {
      this.log(`not connected: ${what} not sent`, 'info');
      return;
    }
    this.outbox.push({ frame, at });
    if (this.outbox.length > OUTBOX_MAX) {
      const old = this.outbox.shift();
      this.log(`too much held while reconnecting: dropped ${old.frame.payload.kind} to ${old.frame.to.join(',')}`, 'info');
    }
  }

  /** Sends what {@link hold} kept, in order, leaving out what went stale. */
  flushOutbox() {
    const held = this.outbox;
    this.outbox = [];
    const now = performance.now();
    for (const { frame, at } of held) {
      if (now - at > OUTBOX_MAX_AGE_MS) {
        this.log(`dropped ${frame.payload.kind} to ${frame.to.join(',')}: held ${Math.round(now - at)} ms while reconnecting`, 'info');
        continue;
      }
      if (!this.sendFrame(frame)) this.hold(frame, at);
    }
  }

  onFrame(data) {
    this.lastHeard = performance.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this.log('dropped a frame that is not JSON');
      return;
    }
    if (!frame || typeof frame !== 'object') return;
    const waiter = frame.id !== undefined ? this.pending.get(frame.id) : undefined;
    switch (frame.type) {
      case 'login_ok':
      case 'joined':
      case 'left':
        if (waiter) {
          this.pending.delete(frame.id);
          waiter.resolve(frame);
        }
        break;
      case 'pong':
        break;
      case 'ice_servers': {
        const answered = frame.id !== undefined && frame.id === this.iceRefresh.awaiting;
        if (!this.takeIceServers(frame.ice_servers) && answered) this.iceRefreshFailed('no later expiry');
        break;
      }
      case 'error':
        if (frame.id !== undefined && frame.id === this.iceRefresh.awaiting) {
          if (frame.code === 'unknown_type') {
            // An older server: credentials renew at the next login only.
            this.stopIceRefresh();
          } else {
            this.iceRefreshFailed(frame.code);
          }
          break;
        }
        if (waiter) {
          this.pending.delete(frame.id);
          const message = frame.message || frame.code;
          waiter.reject(waiter.quiet ? new CallingError(frame.code, message) : this.fail(frame.code, message));
        } else {
          this.fail(frame.code, `server: ${frame.message || frame.code}`);
        }
        break;
      case 'message':
        this.onPayload(frame.from, frame.payload);
        break;
      case 'undeliverable':
        this.onUndeliverable(frame.id, frame.users || []);
        break;
      case 'room_leave':
        if (this.active && frame.room === this.active.callId) this.partyUnreachable(frame.user);
        break;
      case 'room_enter':
        if (this.active && frame.room === this.active.callId) this.partyFound(frame.user);
        break;
      case 'kicked_out':
      case 'login_expired':
        break;
      default:
        this.log(`ignored frame type ${frame.type}`);
    }
  }

  /**
   * A `join`, `allow` or `leave` of `room` with `fields` (`allow`,
   * `users`). With `quiet`, a refusal is only logged: an `allow` in an
   * open room (made by an older client) is refused and harms nothing.
   * Returns whether the frame went out (not while reconnecting: the
   * re-login joins the room again).
   */
  roomRequest(type, room, fields = {}, quiet = false) {
    const id = `r${this.nextFrameId++}`;
    if (!this.sendFrame({ type, id, room, ...fields })) return false;
    const reject = quiet ? (e) => this.log(`${type} of the call room refused: ${e.code}`) : () => {};
    this.pending.set(id, { what: type, resolve: () => {}, reject, quiet });
    return true;
  }

  // ---- call layer: helpers -----------------------------------------------

  newParty() {
    // Unix time in ms x 1024, only growing (see PROTOCOL "Parties").
    const now = Date.now();
    if (now > this.lastPartyMs) {
      this.lastPartyMs = now;
      this.partySeq = 0;
    } else {
      this.partySeq += 1;
      if (this.partySeq >= 1024) {
        this.lastPartyMs += 1;
        this.partySeq = 0;
      }
    }
    return this.lastPartyMs * 1024 + this.partySeq;
  }

  envelope(kind, fields = {}, call = this.active) {
    return { version: CALL_VERSION, call_id: call.callId, party: call.party, kind, ...fields };
  }

  info(call) {
    const info = {
      room_id: call.roomId, media_type: call.mediaType, sponsor: call.sponsor, is_group: call.isGroup,
    };
    if (call.groupId) info.group_id = call.groupId;
    return info;
  }

  roster(call) {
    const connected = [];
    if (call.state === 'connected') {
      connected.push({ user: this.userId, party: call.party, audio: this.media.audio, video: this.media.video && call.mediaType === 'video' });
    }
    for (const [user, m] of call.connected) connected.push({ user, party: m.party, audio: m.audio, video: m.video });
    const ringing = [];
    for (const [user, p] of call.ringing) ringing.push({ user, invite_id: p.invite_id, inviter: p.inviter });
    return { connected, ringing };
  }

  everyone(call = this.active) {
    return [...call.connected.keys(), ...call.ringing.keys()];
  }

  isLate(from, party) {
    return typeof party === 'number' && party <= (this.overMark.get(from) || 0);
  }

  markOver(user, party) {
    if (party > (this.overMark.get(user) || 0)) this.overMark.set(user, party);
  }

  clearTimers(call) {
    for (const t of call.timers.values()) clearTimeout(t);
    call.timers.clear();
  }

  addRinging(call, user, pending) {
    call.ringing.set(user, pending);
    if (typeof pending.invite_id === 'string') call.invited.set(user, pending.invite_id);
  }

  newCall(fields) {
    return {
      state: 'calling', party: this.newParty(), connected: new Map(), ringing: new Map(), roomAllowed: new Set(),
      peers: new Map(), timers: new Map(), inviteId: null, inviter: null, groupId: null,
      localStream: null, joinedRoom: false, answeredAt: null, joinSecret: null, host: null,
      // user -> the invite id it was invited with (PROTOCOL "Security
      // model": the right to enter), kept after a timeout, gone on reject.
      invited: new Map(),
      switchIn: new Map(), switchOut: null, deviceProblems: { audio: false, video: false }, ...fields,
    };
  }

  // ---- call layer: the app's commands ------------------------------------

  /** Calls `users` (one: a 1v1 call; several: a group call). Resolves with the call id. */
  async call(users, mediaType = 'video', timeoutS = 30, { group = false, groupID = null } = {}) {
    if (!Array.isArray(users)) throw this.fail('invalid_argument', 'users is an array of user ids');
    if (!this.userId) throw this.fail('not_logged_in', 'log in first');
    // An invite sent now would be lost: nobody would ring.
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw this.fail('not_connected', 'not connected to the server (reconnecting): try again when it is back');
    if (this.active) throw this.fail('busy', 'already in a call');
    users = [...new Set(users)].filter((u) => u && u !== this.userId);
    if (users.length === 0) throw this.fail('invalid_user_id', 'name at least one other user');
    const bad = users.find((u) => !CALL_USER_RE.test(u));
    if (bad !== undefined) throw this.fail('invalid_user_id', `invalid user id: ${JSON.stringify(bad)}`);
    if (mediaType !== 'audio' && mediaType !== 'video') throw this.fail('invalid_media_type', 'media type is audio or video');
    const call = this.newCall({
      callId: uuid(), roomId: 1 + Math.floor(Math.random() * 0x7ffffffe), mediaType, joinSecret: uuid(),
      sponsor: this.userId, isGroup: group || users.length > 1, groupId: groupID, state: 'connected', timeout: timeoutS,
    });
    this.active = call;
    for (const u of users) this.addRinging(call, u, { invite_id: uuid(), inviter: this.userId });
    await this.openLocalMedia(call);
    if (this.active !== call) return call.callId;
    this.joinCallRoom(call);
    const roster = this.roster(call);
    for (const u of users) {
      const inviteId = call.ringing.get(u).invite_id;
      this.sendPayload([u], this.envelope('invite', {
        invite_id: inviteId, ...this.info(call), timeout: timeoutS, roster,
      }, call));
      if (timeoutS > 0) {
        call.timers.set(`ring:${u}`, setTimeout(() => this.inviteeTimedOut(call, [u], 'timeout'), (timeoutS + INVITER_GRACE_S) * 1000));
      }
    }
    this.log(`calling ${users.join(', ')} (${mediaType})`);
    return call.callId;
  }

  /** Accepts the invite this client is ringing for. */
  async accept() {
    const call = this.active;
    if (!call || call.state !== 'ringing') throw this.fail('no_invite', 'nothing is ringing');
    clearTimeout(call.timers.get('ringing'));
    call.timers.delete('ringing');
    this.answered.add(call.inviteId);
    call.state = 'connected';
    call.answeredAt = performance.now();
    await this.openLocalMedia(call);
    if (this.active !== call) return;
    this.sendPayload(this.everyone(call), this.envelope('enter', {
      invite_id: call.inviteId, audio: this.media.audio, video: this.media.video && call.mediaType === 'video',
    }));
    this.joinCallRoom(call);
    for (const user of call.connected.keys()) {
      this.emit('userEnter', { user, callId: call.callId });
      this.ensurePeer(call, user);
    }
    this.log(`accepted the call from ${call.inviter}`);
  }

  /** Declines the invite this client is ringing for. */
  async reject({ busy = false } = {}) {
    const call = this.active;
    if (!call || call.state !== 'ringing') throw this.fail('no_invite', 'nothing is ringing');
    this.answered.add(call.inviteId);
    this.sendPayload(this.everyone(call), this.envelope('reject', { invite_id: call.inviteId, busy: !!busy }));
    this.endCall(busy ? 'busy' : 'rejected');
  }

  /** Leaves the call, or cancels it if nobody answered yet; rejects a ringing invite. */
  async hangup() {
    const call = this.active;
    if (!call) return;
    if (call.state === 'ringing') return this.reject();
    if (call.connected.size === 0) {
      for (const [user, p] of call.ringing) {
        this.answered.add(p.invite_id);
        if (p.inviter === this.userId) this.sendPayload([user], this.envelope('cancel', { invite_id: p.invite_id }));
      }
    } else {
      this.sendPayload(this.everyone(call), this.envelope('leave'));
    }
    this.endCall('hangup');
  }

  /** Mutes or unmutes the microphone; the others get media_state. */
  setMicMute(muted) {
    this.media.audio = !muted;
    this.applyLocalMedia();
  }

  /** Turns the camera on or off; the others get media_state. */
  setCamera(on) {
    this.media.video = !!on;
    this.applyLocalMedia();
  }

  /**
   * Joins a running call with a join ticket a member handed out (its text
   * form `host:secret`, PROTOCOL "Join with a ticket"). Resolves once the
   * host let us in; rejects when it does not answer within 10 s.
   */
  async join(callId, ticket) {
    if (!this.userId) throw this.fail('not_logged_in', 'log in first');
    if (this.active) throw this.fail('busy', 'already in a call');
    if (typeof callId !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(callId)) throw this.fail('invalid_argument', 'callId is 1 to 64 letters, digits, - or _');
    const [host, secret] = typeof ticket === 'string' ? ticket.split(/:(.*)/s) : [];
    if (!host || !CALL_USER_RE.test(host) || !secret) throw this.fail('invalid_argument', 'a join ticket reads host:secret');
    if (host === this.userId) throw this.fail('invalid_argument', 'the ticket is our own');
    const call = this.newCall({
      callId, roomId: 0, mediaType: 'audio', sponsor: host, isGroup: true, state: 'joining',
      host, joinSecret: secret, connected: new Map([[host, { party: 0, audio: true, video: true }]]),
    });
    this.active = call;
    await this.openLocalMedia(call);
    if (this.active !== call) throw this.fail('join_failed', 'the join was given up');
    return new Promise((resolve, reject) => {
      call.timers.set('join', setTimeout(() => {
        if (this.active !== call || call.state !== 'joining') return;
        this.sendPayload([host], this.envelope('leave', {}, call));
        reject(this.fail('join_failed', `${host} did not let us in`));
        this.endCall('join_failed');
      }, JOIN_TIMEOUT_MS));
      const joined = (e) => {
        if (e.detail.callId !== call.callId) return;
        this.removeEventListener('joined', joined);
        this.removeEventListener('callEnd', ended);
        resolve(call.callId);
      };
      const ended = (e) => {
        if (e.detail.callId !== call.callId) return;
        this.removeEventListener('joined', joined);
        this.removeEventListener('callEnd', ended);
        reject(new CallingError('join_failed', `the join ended: ${e.detail.reason}`));
      };
      this.addEventListener('joined', joined);
      this.addEventListener('callEnd', ended);
      this.sendPayload([host], this.envelope('enter', { join_secret: secret, audio: this.media.audio, video: false }, call));
    });
  }

  /** The current call's join ticket (`host:secret`), to hand to a joiner. */
  joinTicket() {
    const call = this.active;
    if (!call || call.state !== 'connected' || !call.joinSecret) return null;
    return `${this.userId}:${call.joinSecret}`;
  }

  /**
   * Asks the others to switch the call to `mediaType`. To audio it applies
   * at once; to video it applies when every connected party accepted
   * (resolves true), and is refused by the first who declines or after
   * 30 s without an answer (resolves false, event `switchRefused`).
   */
  async requestSwitch(mediaType) {
    const call = this.active;
    if (!call || call.state !== 'connected') throw this.fail('not_in_call', 'not in a call');
    if (mediaType !== 'audio' && mediaType !== 'video') throw this.fail('invalid_media_type', 'media type is audio or video');
    if (call.mediaType === mediaType) return true;
    if (mediaType === 'audio') {
      this.applyMediaType(call, 'audio', null);
      return true;
    }
    if (call.switchOut) throw this.fail('switch_pending', 'a switch is already asked for');
    const asked = [...call.connected.keys()];
    if (asked.length === 0) {
      this.applyMediaType(call, 'video', null);
      return true;
    }
    const requestId = 1 + Math.floor(Math.random() * 0x7ffffffe);
    return new Promise((resolve) => {
      call.switchOut = { requestId, waiting: new Set(asked), resolve };
      call.timers.set('switch', setTimeout(() => this.switchDone(call, false, [...call.switchOut.waiting]), SWITCH_TIMEOUT_MS));
      this.sendPayload(asked, this.envelope('switch_request', { request_id: requestId, media_type: mediaType }));
    });
  }

  /** Answers a `switchRequest` event: accept or refuse the switch. */
  answerSwitch(requestId, accept) {
    const call = this.active;
    const from = call && call.switchIn.get(requestId);
    if (!from) throw this.fail('no_switch_request', 'no such switch request');
    call.switchIn.delete(requestId);
    this.sendPayload([from], this.envelope('switch_answer', { request_id: requestId, accepted: !!accept }));
  }

  onSwitchAnswer(call, from, p) {
    const out = call.switchOut;
    if (!out || out.requestId !== p.request_id || !out.waiting.has(from)) return;
    if (!p.accepted) {
      this.switchDone(call, false, [from]);
      return;
    }
    out.waiting.delete(from);
    if (out.waiting.size === 0) this.switchDone(call, true, []);
  }

  switchDone(call, accepted, refusedBy) {
    const out = call.switchOut;
    if (!out) return;
    call.switchOut = null;
    clearTimeout(call.timers.get('switch'));
    call.timers.delete('switch');
    if (accepted) this.applyMediaType(call, 'video', null);
    else this.emit('switchRefused', { users: refusedBy, callId: call.callId });
    out.resolve(accepted);
  }

  /** The call is now `to`; `by` switched it (null: we did, and tell everyone). */
  applyMediaType(call, to, by) {
    const from = call.mediaType;
    if (from === to) return;
    call.mediaType = to;
    if (by === null) this.sendPayload(this.everyone(call), this.envelope('media_type', { media_type: to }));
    this.log(`the call is now ${to}`);
    this.emit('mediaTypeChanged', { user: by || this.userId, from, to, callId: call.callId });
    for (const [user, m] of call.connected) {
      if (m.video) this.emit('userVideoAvailable', { user, available: to === 'video' });
    }
    if (to === 'video' && call.state === 'connected') {
      this.media.video = true;
      this.addCamera(call).then((ok) => {
        if (!ok) this.media.video = false;
        this.applyLocalMedia();
      });
    } else {
      this.applyLocalMedia();
    }
  }

  applyLocalMedia() {
    const call = this.active;
    if (!call) return;
    if (call.localStream) {
      for (const t of call.localStream.getAudioTracks()) t.enabled = this.media.audio;
      for (const t of call.localStream.getVideoTracks()) t.enabled = this.media.video;
    }
    if (call.state === 'connected') {
      this.sendPayload([...call.connected.keys()], this.envelope('media_state', {
        audio: this.media.audio, video: this.media.video && call.mediaType === 'video',
      }));
    }
  }

  // ---- call layer: inbound -----------------------------------------------

  onPayload(from, p) {
    if (typeof from !== 'string' || !p || typeof p !== 'object' || Array.isArray(p)) {
      this.log(`dropped a payload from ${from} that is not an object`);
      return;
    }
    if (p.version !== CALL_VERSION) {
      this.log(`dropped a payload from ${from}: unsupported protocol version ${p.version}`);
      return;
    }
    if (typeof p.call_id !== 'string' || !KINDS.has(p.kind)) {
      this.log(`dropped a payload from ${from}: unknown message kind ${p.kind}`);
      return;
    }
    if (this.active && this.active.callId === p.call_id) this.partyFound(from);
    if (p.kind === 'media') {
      this.onMedia(from, p);
      return;
    }
    if (typeof p.party !== 'number') {
      this.log(`dropped ${p.kind} from ${from}: no party`);
      return;
    }
    if (this.isLate(from, p.party) && p.kind !== 'gone') return;
    const call = this.active && this.active.callId === p.call_id ? this.active : null;
    switch (p.kind) {
      case 'invite': return this.onInvite(from, p);
      case 'cancel':
        if (call && call.state === 'ringing' && call.inviteId === p.invite_id) {
          this.answered.add(p.invite_id);
          this.emit('callingCancel', { user: from, callId: call.callId });
          this.endCall('cancelled');
        } else if (!call) {
          this.earlyCancels.add(p.invite_id);
        }
        return;
      case 'enter': return call ? this.onEnter(call, from, p) : this.answerGone(from, p);
      case 'roster': return call ? this.onRoster(call, from, p) : this.answerGone(from, p);
      case 'reject':
        if (call && call.ringing.has(from)) {
          call.ringing.delete(from);
          call.invited.delete(from);
          clearTimeout(call.timers.get(`ring:${from}`));
          this.emit(p.busy ? 'lineBusy' : 'reject', { user: from, callId: call.callId });
          this.checkEnd(call, p.busy ? 'busy' : 'rejected');
        }
        return;
      case 'timeout':
        if (!call || !Array.isArray(p.users)) return;
        if (call.state === 'ringing' && p.users.includes(this.userId)) {
          this.emit('callingTimeout', { callId: call.callId });
          this.endCall('timeout');
          return;
        }
        for (const u of p.users) {
          if (call.ringing.delete(u)) {
            clearTimeout(call.timers.get(`ring:${u}`));
            this.emit('noResp', { user: u, reason: p.reason, callId: call.callId });
          }
        }
        this.checkEnd(call, 'no_answer');
        return;
      case 'leave':
        this.markOver(from, p.party);
        if (call) this.partyGone(from, 'left');
        return;
      case 'gone':
        if (typeof p.upto === 'number') this.markOver(from, p.upto - 1);
        if (call) this.partyGone(from, 'left');
        return;
      case 'alive':
        // A sign of life; about a call this client is not in: gone.
        if (!call) return this.answerGone(from, p);
        return;
      case 'media_state':
        if (!call || call.state !== 'connected') return this.answerGone(from, p);
        if (call.connected.has(from)) this.setMemberMedia(call, from, !!p.audio, !!p.video);
        return;
      case 'media_type':
        if (!call) return this.answerGone(from, p);
        if (!call.connected.has(from) || (p.media_type !== 'audio' && p.media_type !== 'video')) return;
        this.applyMediaType(call, p.media_type, from);
        return;
      case 'switch_request':
        if (!call) return this.answerGone(from, p);
        if (call.state !== 'connected' || !call.connected.has(from) || !Number.isInteger(p.request_id)) return;
        if (p.media_type === call.mediaType) {
          this.sendPayload([from], this.envelope('switch_answer', { request_id: p.request_id, accepted: true }));
        } else if (p.media_type === 'video' || p.media_type === 'audio') {
          call.switchIn.set(p.request_id, from);
          this.emit('switchRequest', { user: from, requestId: p.request_id, mediaType: p.media_type, callId: call.callId });
        }
        return;
      case 'switch_answer':
        if (call) this.onSwitchAnswer(call, from, p);
        return;
      default:
        return;
    }
  }

  sendAlive() {
    const call = this.active;
    if (call && call.state === 'connected' && call.connected.size > 0) {
      this.sendPayload([...call.connected.keys()], this.envelope('alive'));
    }
  }

  answerGone(from, p) {
    const upto = this.newParty();
    this.sendPayload([from], { version: CALL_VERSION, call_id: p.call_id, party: upto, kind: 'gone', upto });
  }

  onInvite(from, p) {
    if (typeof p.invite_id !== 'string' || this.answered.has(p.invite_id)) return;
    if (this.earlyCancels.delete(p.invite_id)) {
      this.answered.add(p.invite_id);
      return;
    }
    const roster = p.roster && typeof p.roster === 'object' ? p.roster : { connected: [], ringing: [] };
    const connected = Array.isArray(roster.connected) ? roster.connected : [];
    const ringing = Array.isArray(roster.ringing) ? roster.ringing : [];
    const cur = this.active;
    if (cur && cur.callId === p.call_id) return; // a duplicate
    if (cur) {
      // Glare: both sides call each other 1v1 before either answered.
      const glare = !p.is_group && !cur.isGroup && cur.state === 'connected' && cur.sponsor === this.userId
        && cur.connected.size === 0 && cur.ringing.size === 1 && cur.ringing.has(from);
      if (glare) {
        if (cur.callId < p.call_id) return; // ours wins: ignore theirs
        this.clearTimers(cur);
        this.closePeers(cur);
        this.leaveCallRoom(cur);
        const keep = cur.localStream;
        this.active = null;
        this.startRinging(from, p, connected, ringing);
        this.active.localStream = keep;
        this.accept();
        return;
      }
      // One call at a time: busy, to everyone in the invite's roster.
      const to = [from, ...connected.map((m) => m.user), ...ringing.map((r) => r.user)];
      this.answered.add(p.invite_id);
      this.sendPayload(to, { version: CALL_VERSION, call_id: p.call_id, party: this.newParty(), kind: 'reject', invite_id: p.invite_id, busy: true });
      this.log(`${from} called while busy: answered busy`);
      return;
    }
    this.startRinging(from, p, connected, ringing);
    this.emit('invited', {
      sponsor: p.sponsor, inviter: from, inviteId: p.invite_id, callId: p.call_id,
      mediaType: p.media_type, isGroup: !!p.is_group, users: [...this.active.connected.keys(), ...this.active.ringing.keys()],
    });
  }

  startRinging(from, p, connected, ringing) {
    const call = this.newCall({
      callId: p.call_id, roomId: p.room_id, mediaType: p.media_type === 'audio' ? 'audio' : 'video',
      sponsor: p.sponsor, isGroup: !!p.is_group, groupId: p.group_id || null, state: 'ringing',
      inviteId: p.invite_id, inviter: from, timeout: p.timeout,
    });
    for (const m of connected) {
      if (m && m.user !== this.userId && typeof m.user === 'string') {
        call.connected.set(m.user, { party: m.party, audio: !!m.audio, video: !!m.video });
      }
    }
    for (const r of ringing) {
      if (r && r.user !== this.userId && typeof r.user === 'string') this.addRinging(call, r.user, { invite_id: r.invite_id, inviter: r.inviter });
    }
    this.active = call;
    const secs = Number(p.timeout) || 0;
    if (secs > 0) {
      call.timers.set('ringing', setTimeout(() => {
        if (this.active !== call || call.state !== 'ringing') return;
        this.answered.add(call.inviteId);
        this.sendPayload(this.everyone(call), this.envelope('timeout', { invite_id: call.inviteId, users: [this.userId], reason: 'timeout' }));
        this.emit('callingTimeout', { callId: call.callId });
        this.endCall('timeout');
      }, secs * 1000));
    }
  }

  onEnter(call, from, p) {
    // A joiner listens to its host's roster only.
    if (call.state === 'joining') return;
    // PROTOCOL "Security model": an enter needs a right. The call id is
    // no password.
    const ringing = call.ringing.get(from);
    const byInvite = (ringing && (p.invite_id === undefined || p.invite_id === ringing.invite_id))
      || (typeof p.invite_id === 'string' && call.invited.get(from) === p.invite_id);
    const bySecret = p.join_secret !== undefined && call.state === 'connected' && !!call.joinSecret
      && p.join_secret === call.joinSecret;
    if (!byInvite && !bySecret && !call.connected.has(from)) {
      this.log(`dropped an enter from ${from}: no invite, ticket or membership`);
      return;
    }
    if (bySecret) call.isGroup = true;
    const known = call.connected.get(from);
    if (known && known.party === p.party) return;
    if (known && known.party > p.party) return;
    call.ringing.delete(from);
    clearTimeout(call.timers.get(`ring:${from}`));
    call.connected.set(from, { party: p.party, audio: !!p.audio, video: !!p.video });
    if (call.state !== 'connected') return; // still ringing here: just learn it
    if (call.answeredAt === null) call.answeredAt = performance.now();
    // Everyone we know hears of the newcomer from us (PROTOCOL "Accept"),
    // once it may join the call's room.
    this.allowIntoRoom(call);
    this.sendPayload(this.everyone(call), this.envelope('roster', this.rosterFields(call)));
    if (known) this.closePeer(call, from);
    this.emit('userEnter', { user: from, callId: call.callId });
    this.ensurePeer(call, from);
  }

  rosterFields(call) {
    const fields = { ...this.info(call), roster: this.roster(call) };
    if (call.joinSecret) fields.join_secret = call.joinSecret;
    return fields;
  }

  onRoster(call, from, p) {
    if (call.state === 'joining') {
      // PROTOCOL "Join with a ticket": the host's roster lets us in.
      if (from !== call.host) return;
      clearTimeout(call.timers.get('join'));
      call.timers.delete('join');
      if (Number.isInteger(p.room_id)) call.roomId = p.room_id;
      if (p.media_type === 'audio' || p.media_type === 'video') call.mediaType = p.media_type;
      if (typeof p.sponsor === 'string') call.sponsor = p.sponsor;
      call.state = 'connected';
      call.answeredAt = performance.now();
      this.joinCallRoom(call);
      this.log(`joined the call of ${from}`, 'info');
      this.emit('joined', { callId: call.callId, host: from, mediaType: call.mediaType });
      if (call.mediaType === 'video' && this.media.video) {
        this.addCamera(call).then((ok) => {
          if (!ok) this.media.video = false;
          this.applyLocalMedia();
        });
      }
    }
    if (typeof p.join_secret === 'string' && !call.joinSecret && call.state === 'connected') call.joinSecret = p.join_secret;
    const roster = p.roster && typeof p.roster === 'object' ? p.roster : {};
    const connected = Array.isArray(roster.connected) ? roster.connected : [];
    const ringing = Array.isArray(roster.ringing) ? roster.ringing : [];
    let listsMe = false;
    for (const m of connected) {
      if (!m || typeof m.user !== 'string') continue;
      if (m.user === this.userId) {
        // A joiner's host must list its current participation.
        if (!(call.host === from && m.party !== call.party)) listsMe = true;
        continue;
      }
      if (this.isLate(m.user, m.party)) continue;
      const known = call.connected.get(m.user);
      if (known && known.party >= m.party) continue;
      call.ringing.delete(m.user);
      call.connected.set(m.user, { party: m.party, audio: !!m.audio, video: !!m.video });
      if (call.state === 'connected' && m.user !== from) {
        this.sendPayload([m.user], this.envelope('enter', { audio: this.media.audio, video: this.media.video && call.mediaType === 'video' }));
      }
      if (call.state === 'connected') {
        this.emit('userEnter', { user: m.user, callId: call.callId });
        this.ensurePeer(call, m.user);
      }
    }
    let newInvitees = false;
    for (const r of ringing) {
      if (r && typeof r.user === 'string' && r.user !== this.userId && !call.connected.has(r.user)) {
        if (!call.ringing.has(r.user)) newInvitees = true;
        this.addRinging(call, r.user, { invite_id: r.invite_id, inviter: r.inviter });
      }
    }
    if (call.state === 'connected') this.allowIntoRoom(call);
    // A member invited more users (TRTCCalling's GROUP_CALL_INVITEE_LIST_UPDATE).
    if (newInvitees && call.state === 'connected') this.emit('inviteeListUpdate', { users: [...call.ringing.keys()], callId: call.callId });
    if (call.state === 'connected' && !listsMe) {
      const fields = { audio: this.media.audio, video: this.media.video && call.mediaType === 'video' };
      if (call.host === from && call.joinSecret) fields.join_secret = call.joinSecret;
      this.sendPayload([from], this.envelope('enter', fields));
    }
  }

  onUndeliverable(id, users) {
    const target = this.sendTargets.get(id);
    const call = this.active;
    if (!target || !call || target.callId !== call.callId) return;
    if (target.kind === 'invite') {
      this.inviteeTimedOut(call, users, 'offline');
    } else {
      for (const u of users) if (call.connected.has(u)) this.partyUnreachable(u);
    }
  }

  /**
   * `user`'s signaling connection died (room_leave, an undelivered send).
   * A connected party may be reconnecting (PROTOCOL "Reconnecting"): it
   * counts as gone only if it stays silent for the grace.
   */
  partyUnreachable(user) {
    const call = this.active;
    if (!call) return;
    if (!call.connected.has(user) || this.reconnectGraceMs === 0) {
      this.partyGone(user, 'left');
      return;
    }
    const key = `grace:${user}`;
    if (call.timers.has(key)) return;
    this.log(`${user} is unreachable; waiting ${this.reconnectGraceMs} ms for it to reconnect`);
    call.timers.set(key, setTimeout(() => {
      call.timers.delete(key);
      if (this.active === call) this.partyGone(user, 'left');
    }, this.reconnectGraceMs));
  }

  /** `user` was heard from (a message, its room_enter): no longer awaited. */
  partyFound(user) {
    const call = this.active;
    const key = `grace:${user}`;
    if (!call || !call.timers.has(key)) return;
    clearTimeout(call.timers.get(key));
    call.timers.delete(key);
    this.log(`${user} is back`);
  }

  inviteeTimedOut(call, users, reason) {
    if (this.active !== call) return;
    const gone = users.filter((u) => call.ringing.has(u));
    if (gone.length === 0) return;
    for (const u of gone) {
      const inviteId = call.ringing.get(u).invite_id;
      this.answered.add(inviteId);
      call.ringing.delete(u);
      clearTimeout(call.timers.get(`ring:${u}`));
      this.sendPayload([...this.everyone(call), u], this.envelope('timeout', { invite_id: inviteId, users: [u], reason }));
      this.emit('noResp', { user: u, reason, callId: call.callId });
    }
    this.checkEnd(call, 'no_answer');
  }

  partyGone(user, why) {
    const call = this.active;
    if (!call) return;
    const was = call.connected.get(user);
    clearTimeout(call.timers.get(`grace:${user}`));
    call.timers.delete(`grace:${user}`);
    if (was) {
      this.markOver(user, was.party);
      call.connected.delete(user);
      this.closePeer(call, user);
      this.emit('userLeave', { user, callId: call.callId });
    } else if (call.ringing.delete(user)) {
      this.emit('noResp', { user, reason: why, callId: call.callId });
    }
    this.checkEnd(call, 'hangup');
  }

  setMemberMedia(call, user, audio, video) {
    const m = call.connected.get(user);
    if (!m) return;
    const was = { audio: m.audio, video: m.video };
    // Updated first: a listener reading the member sees the new state.
    m.audio = audio;
    m.video = video;
    if (was.audio !== audio) this.emit('userAudioAvailable', { user, available: audio });
    if (was.video !== video) this.emit('userVideoAvailable', { user, available: video });
  }

  checkEnd(call, reason) {
    if (this.active !== call) return;
    if (call.state === 'ringing') {
      if (call.connected.size === 0) {
        this.emit('callingCancel', { callId: call.callId });
        this.endCall('cancelled');
      }
      return;
    }
    if (call.connected.size === 0 && call.ringing.size === 0) this.endCall(reason);
  }

  endCall(reason) {
    const call = this.active;
    if (!call) return;
    this.active = null;
    this.clearTimers(call);
    this.closePeers(call);
    this.leaveCallRoom(call);
    if (call.localStream) for (const t of call.localStream.getTracks()) t.stop();
    this.media = { audio: true, video: true };
    this.log(`call ${call.callId} ended: ${reason}`);
    this.emit('callEnd', { callId: call.callId, reason });
  }

  /**
   * Joins the server room named by the call, through which the server
   * tells when a member's connection dies. The sponsor makes it closed,
   * open only to the users it invites (as the Rust SDK does), so that a
   * stranger who knows the call id cannot sit in it.
   */
  joinCallRoom(call) {
    if (call.joinedRoom) return;
    call.joinedRoom = true;
    this.roomRequest('join', call.callId, this.joinFields(call));
  }

  /**
   * The `join` fields: the sponsor's list of everyone invited or in the
   * call; nothing for the others, whom the sponsor's list admits. Whom
   * the room admits from now on is noted for {@link allowIntoRoom}.
   */
  joinFields(call) {
    const allow = this.members(call);
    call.roomAllowed = new Set(allow);
    if (call.sponsor !== this.userId) return {};
    return allow.length > 0 ? { allow } : {};
  }

  members(call) {
    return [...call.connected.keys(), ...call.ringing.keys()].filter((u) => u !== this.userId);
  }

  /**
   * Lets into the call's room the parties it does not admit yet (a
   * joiner with a ticket, an invitee another member added), before they
   * are told of the call and join it.
   */
  allowIntoRoom(call) {
    if (!call.joinedRoom) return;
    const fresh = this.members(call).filter((u) => !call.roomAllowed.has(u));
    if (fresh.length === 0) return;
    if (this.roomRequest('allow', call.callId, { users: fresh }, true)) {
      for (const u of fresh) call.roomAllowed.add(u);
    }
  }

  leaveCallRoom(call) {
    if (!call.joinedRoom) return;
    call.joinedRoom = false;
    this.roomRequest('leave', call.callId);
  }

  // ---- media ---------------------------------------------------------------

  /** The getUserMedia constraints for `kind` ('audio' or 'video'). */
  constraintsFor(kind) {
    const base = this.mediaConstraints && this.mediaConstraints[kind] !== undefined
      ? this.mediaConstraints[kind]
      : (kind === 'video' ? { ...this.videoProfile } : true);
    const device = this.devices[kind];
    if (!device) return base;
    return { ...(typeof base === 'object' && base ? base : {}), deviceId: { exact: device } };
  }

  /**
   * Opens the microphone (and the camera in a video call). What cannot be
   * opened is reported (`error` code `microphone_unavailable` /
   * `camera_unavailable`) and counted off, so that the others are told the
   * truth in `enter` / `media_state`: a callee never waits for a camera that
   * is not there.
   */
  async openLocalMedia(call) {
    if (call.localStream) return;
    const video = call.mediaType === 'video';
    const stream = new MediaStream();
    const open = async (kind) => {
      try {
        const got = await navigator.mediaDevices.getUserMedia({ [kind]: this.constraintsFor(kind) });
        for (const t of got.getTracks()) stream.addTrack(t);
        return true;
      } catch (e) {
        const what = kind === 'video' ? 'camera' : 'microphone';
        this.fail(`${what}_unavailable`, `cannot open the ${what}: ${e.message}`);
        return false;
      }
    };
    const [audioOk, videoOk] = await Promise.all([open('audio'), video ? open('video') : Promise.resolve(false)]);
    if (!audioOk) this.media.audio = false;
    if (video && !videoOk) this.media.video = false;
    for (const t of stream.getAudioTracks()) t.enabled = this.media.audio;
    for (const t of stream.getVideoTracks()) t.enabled = this.media.video;
    call.deviceProblems = { audio: !audioOk, video: video && !videoOk };
    call.localStream = stream;
    this.emit('localStream', { stream });
  }

  /**
   * Opens the camera in a call that has none yet (a switch to video, or a
   * camera that failed before) and sends it on every peer's video m-line,
   * which every connection has (PROTOCOL "SDP: m-lines"), without
   * renegotiating. Resolves with whether a camera is now open.
   */
  async addCamera(call) {
    if (!call.localStream) call.localStream = new MediaStream();
    if (call.localStream.getVideoTracks().length > 0) return true;
    let track;
    try {
      const got = await navigator.mediaDevices.getUserMedia({ video: this.constraintsFor('video') });
      [track] = got.getVideoTracks();
    } catch (e) {
      this.fail('camera_unavailable', `cannot open the camera: ${e.message}`);
      return false;
    }
    if (this.active !== call) {
      track.stop();
      return false;
    }
    call.localStream.addTrack(track);
    track.enabled = this.media.video;
    for (const peer of call.peers.values()) await this.sendTrack(peer, track);
    this.emit('localStream', { stream: call.localStream });
    return true;
  }

  /** Puts `track` on `peer`'s sender of its kind (replacing what it sent). */
  async sendTrack(peer, track) {
    const t = this.transceiverOf(peer.pc, track.kind);
    if (!t) return;
    try {
      await t.sender.replaceTrack(track);
    } catch (e) {
      this.log(`cannot send the new ${track.kind} track to ${peer.user}: ${e.message}`);
    }
  }

  transceiverOf(pc, kind) {
    return pc.getTransceivers().find((t) => !t.stopped && (
      (t.sender.track && t.sender.track.kind === kind) || (t.receiver.track && t.receiver.track.kind === kind)));
  }

  /**
   * Uses device `deviceId` for `kind` ('audio' or 'video') from now on, and
   * in the current call at once (the old track stops).
   */
  async useDevice(kind, deviceId) {
    this.devices[kind] = deviceId || null;
    const call = this.active;
    if (!call || !call.localStream) return;
    const old = kind === 'video' ? call.localStream.getVideoTracks() : call.localStream.getAudioTracks();
    if (old.length === 0) return;
    const got = await navigator.mediaDevices.getUserMedia({ [kind]: this.constraintsFor(kind) });
    const [track] = kind === 'video' ? got.getVideoTracks() : got.getAudioTracks();
    track.enabled = kind === 'video' ? this.media.video : this.media.audio;
    for (const t of old) {
      call.localStream.removeTrack(t);
      t.stop();
    }
    call.localStream.addTrack(track);
    for (const peer of call.peers.values()) await this.sendTrack(peer, track);
    this.emit('localStream', { stream: call.localStream });
  }

  /** Sets the camera's resolution: {width, height}, applied to a live camera too. */
  async setVideoProfile(profile) {
    this.videoProfile = { width: profile.width, height: profile.height };
    const call = this.active;
    const track = call && call.localStream && call.localStream.getVideoTracks()[0];
    if (track) await track.applyConstraints({ width: profile.width, height: profile.height }).catch((e) => this.log(`cannot change the video size: ${e.message}`));
  }

  ensurePeer(call, user) {
    const existing = call.peers.get(user);
    if (existing) return existing;
    const pc = new RTCPeerConnection(this.rtcConfiguration());
    // timeline: [what, ms since the peer was created], for setup analysis.
    const peer = {
      pc, user, queued: [], stream: null, createdAt: performance.now(), timeline: [],
      // offerer: whether it offers; broken: the restore in progress
      // ({since, wait, timer, bound}); failed: past the bound;
      // restartAt / restartAnswered: the last restart offer.
      offerer: this.userId < user, broken: null, failed: false, restartAt: null, restartAnswered: true,
    };
    const mark = (what) => peer.timeline.push([what, Math.round(performance.now() - peer.createdAt)]);
    peer.mark = mark;
    pc.oniceconnectionstatechange = () => {
      mark(`ice:${pc.iceConnectionState}`);
      this.checkMedia(call, peer);
    };
    pc.onicegatheringstatechange = () => mark(`gathering:${pc.iceGatheringState}`);
    call.peers.set(user, peer);
    // Audio first, then video, both sendrecv, in audio calls too: a switch
    // to video (or a camera opened later) then needs no renegotiation
    // (PROTOCOL "SDP: m-lines"). The answerer sets its directions when the
    // offer arrives (see onMedia).
    if (peer.offerer) {
      const stream = call.localStream || new MediaStream();
      for (const kind of ['audio', 'video']) {
        const [track] = kind === 'audio' ? stream.getAudioTracks() : stream.getVideoTracks();
        if (track) pc.addTrack(track, stream);
        else pc.addTransceiver(kind, { direction: 'sendrecv', streams: [stream] });
      }
    } else if (call.localStream) {
      for (const track of call.localStream.getTracks()) pc.addTrack(track, call.localStream);
    }
    pc.onicecandidate = (ev) => {
      if (!ev.candidate || !ev.candidate.candidate) return;
      mark('local-candidate');
      const c = ev.candidate;
      const signal = { type: 'candidate', candidate: c.candidate };
      if (c.sdpMid !== null && c.sdpMid !== undefined) signal.sdp_mid = c.sdpMid;
      if (c.sdpMLineIndex !== null && c.sdpMLineIndex !== undefined) signal.sdp_mline_index = c.sdpMLineIndex;
      if (c.usernameFragment) signal.username_fragment = c.usernameFragment;
      this.sendMedia(call, user, signal);
    };
    pc.ontrack = (ev) => {
      if (!peer.stream) peer.stream = ev.streams[0] || new MediaStream();
      if (!ev.streams[0]) peer.stream.addTrack(ev.track);
      this.emit('remoteStream', { user, stream: peer.stream, callId: call.callId });
    };
    pc.onconnectionstatechange = () => {
      mark(`pc:${pc.connectionState}`);
      if (pc.connectionState === 'connected' && peer.connectedAt === undefined) peer.connectedAt = performance.now();
      this.log(`media with ${user}: ${pc.connectionState}`);
      this.checkMedia(call, peer);
    };
    // The byte-wise lower user id offers (PROTOCOL "Media negotiation").
    if (peer.offerer) this.makeOffer(call, peer);
    return peer;
  }

  // ---- ICE restart (PROTOCOL "ICE restart and media failure") ------------

  /** Follows `peer`'s ICE and connection states: broken, or back. */
  checkMedia(call, peer) {
    if (this.active !== call || call.peers.get(peer.user) !== peer || peer.failed) return;
    const pc = peer.pc;
    const bad = (s) => s === 'disconnected' || s === 'failed';
    if (bad(pc.iceConnectionState) || bad(pc.connectionState)) {
      this.mediaBroken(call, peer);
    } else if (peer.broken && pc.connectionState === 'connected'
      && (pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed')) {
      const gapMs = Math.round(performance.now() - peer.broken.since);
      this.stopRestore(peer);
      this.log(`media with ${peer.user} restored after ${gapMs} ms`);
      this.emit('mediaRestored', { user: peer.user, callId: call.callId, gapMs });
    }
  }

  mediaBroken(call, peer) {
    if (peer.broken) return;
    peer.broken = { since: performance.now(), wait: RESTART_FIRST_WAIT_MS, timer: null, bound: null };
    peer.mark('media-interrupted');
    this.log(`media with ${peer.user} interrupted`);
    this.emit('mediaInterrupted', { user: peer.user, callId: call.callId });
    peer.broken.bound = setTimeout(() => this.mediaFailed(call, peer), this.mediaRestoreTimeoutMs);
    this.restoreStep(call, peer);
  }

  /** One retry: the offerer restarts, the answerer asks for a restart. */
  restoreStep(call, peer) {
    const b = peer.broken;
    if (!b || this.active !== call || call.peers.get(peer.user) !== peer) return;
    if (peer.offerer) this.restartIce(call, peer);
    else this.sendMedia(call, peer.user, { type: 'restart' });
    const wait = b.wait;
    b.wait = Math.min(RESTART_MAX_WAIT_MS, b.wait * 2);
    b.timer = setTimeout(() => this.restoreStep(call, peer), wait);
  }

  stopRestore(peer) {
    if (!peer.broken) return;
    clearTimeout(peer.broken.timer);
    clearTimeout(peer.broken.bound);
    peer.broken = null;
  }

  /** Offers anew with new ICE credentials, gathering with the latest servers. */
  async restartIce(call, peer) {
    const pc = peer.pc;
    try {
      pc.setConfiguration({ ...pc.getConfiguration(), iceServers: this.iceServers });
    } catch (e) {
      this.log(`cannot update the ICE servers before a restart: ${e.message}`);
    }
    peer.restartAt = performance.now();
    peer.restartAnswered = false;
    peer.mark('ice-restart');
    try {
      const offer = await pc.createOffer({ iceRestart: true });
      if (this.active !== call || call.peers.get(peer.user) !== peer) return;
      await pc.setLocalDescription(offer);
      this.sendMedia(call, peer.user, { type: 'offer', sdp: pc.localDescription.sdp });
      this.log(`restarted ICE with ${peer.user}`);
    } catch (e) {
      // The next retry tries again; the bound ends it.
      this.log(`cannot restart ICE with ${peer.user}: ${e.message}`);
    }
  }

  /** The answerer's `restart` ask, served unless a restart is on its way. */
  onRestartAsk(call, peer) {
    const now = performance.now();
    if (peer.restartAt !== null) {
      const age = now - peer.restartAt;
      if (age < RESTART_SERVED_MS || (!peer.restartAnswered && age < RESTART_IN_FLIGHT_MS)) return;
    }
    this.restartIce(call, peer);
  }

  mediaFailed(call, peer) {
    if (!peer.broken || this.active !== call) return;
    this.stopRestore(peer);
    peer.failed = true;
    peer.mark('media-failed');
    this.emit('mediaFailed', { user: peer.user, callId: call.callId });
    this.fail('media_failed', `media connection with ${peer.user} failed`);
    // With media failed towards every connected party the call is over.
    const all = [...call.connected.keys()].every((u) => call.peers.has(u) && call.peers.get(u).failed);
    if (all && call.state === 'connected') {
      this.sendPayload(this.everyone(call), this.envelope('leave'));
      this.endCall('media_failed');
    }
  }

  async makeOffer(call, peer) {
    try {
      const offer = await peer.pc.createOffer();
      await peer.pc.setLocalDescription(offer);
      this.sendMedia(call, peer.user, { type: 'offer', sdp: peer.pc.localDescription.sdp });
      peer.mark('offer-sent');
    } catch (e) {
      this.fail('media_failed', `cannot make an offer for ${peer.user}: ${e.message}`);
    }
  }

  sendMedia(call, user, signal) {
    if (this.active !== call) return;
    this.sendPayload([user], { version: CALL_VERSION, call_id: call.callId, kind: 'media', signal });
  }

  async onMedia(from, p) {
    const call = this.active;
    if (!call || call.callId !== p.call_id || call.state !== 'connected' || !call.connected.has(from)) return;
    const s = p.signal;
    if (!s || typeof s !== 'object') return;
    try {
      if (s.type === 'offer' && typeof s.sdp === 'string') {
        const peer = this.ensurePeer(call, from);
        peer.mark('offer-received');
        await peer.pc.setRemoteDescription({ type: 'offer', sdp: s.sdp });
        // Send on every m-line, with a track or not yet: a camera opened
        // later goes out by replaceTrack.
        for (const t of peer.pc.getTransceivers()) {
          if (!t.stopped && t.direction === 'recvonly') t.direction = 'sendrecv';
          const kind = t.receiver.track && t.receiver.track.kind;
          const mine = call.localStream && kind && (kind === 'video' ? call.localStream.getVideoTracks() : call.localStream.getAudioTracks())[0];
          if (mine && t.sender.track !== mine && !t.sender.track) await t.sender.replaceTrack(mine);
        }
        const answer = await peer.pc.createAnswer();
        if (this.passiveDtls) answer.sdp = answer.sdp.replace(/a=setup:active/g, 'a=setup:passive');
        await peer.pc.setLocalDescription(answer);
        this.sendMedia(call, from, { type: 'answer', sdp: peer.pc.localDescription.sdp });
        peer.mark('answer-sent');
        await this.flushCandidates(peer);
      } else if (s.type === 'answer' && typeof s.sdp === 'string') {
        const peer = call.peers.get(from);
        if (!peer) return;
        peer.mark('answer-received');
        if (peer.pc.signalingState !== 'have-local-offer') {
          // The answer to a restart offer made again, after the newer
          // offer's answer: nothing to apply.
          this.log(`dropped a late answer from ${from}`);
          return;
        }
        await peer.pc.setRemoteDescription({ type: 'answer', sdp: s.sdp });
        peer.restartAnswered = true;
        await this.flushCandidates(peer);
      } else if (s.type === 'restart') {
        const peer = call.peers.get(from);
        // Only the answering (higher id) side asks.
        if (!peer || !peer.offerer || peer.failed) {
          this.log(`dropped a restart ask from ${from}`);
          return;
        }
        this.onRestartAsk(call, peer);
      } else if (s.type === 'candidate' && typeof s.candidate === 'string') {
        const peer = this.ensurePeer(call, from);
        peer.mark('remote-candidate');
        const init = { candidate: s.candidate };
        if (s.sdp_mid !== undefined && s.sdp_mid !== null) init.sdpMid = s.sdp_mid;
        if (typeof s.sdp_mline_index === 'number') init.sdpMLineIndex = s.sdp_mline_index;
        if (s.username_fragment) init.usernameFragment = s.username_fragment;
        if (init.sdpMid === undefined && init.sdpMLineIndex === undefined) init.sdpMLineIndex = 0;
        // While a restart offer awaits its answer, the answerer's new
        // candidates belong to that answer: keep them until it is applied.
        if (peer.pc.remoteDescription && peer.pc.signalingState !== 'have-local-offer') {
          await this.addCandidate(peer, init);
        } else {
          peer.queued.push(init);
        }
      }
    } catch (e) {
      this.fail('media_failed', `media negotiation with ${from} failed: ${e.message}`);
    }
  }

  async flushCandidates(peer) {
    const queued = peer.queued;
    peer.queued = [];
    for (const c of queued) await this.addCandidate(peer, c);
  }

  async addCandidate(peer, init) {
    try {
      await peer.pc.addIceCandidate(init);
    } catch (e) {
      // A candidate of an older ICE generation (a restart overtook it):
      // harmless.
      if (peer.restartAt === null && !peer.broken) throw e;
      this.log(`dropped a candidate from ${peer.user}: ${e.message}`);
    }
  }

  closePeer(call, user) {
    const peer = call.peers.get(user);
    if (!peer) return;
    call.peers.delete(user);
    this.stopRestore(peer);
    peer.pc.close();
  }

  closePeers(call) {
    for (const user of [...call.peers.keys()]) this.closePeer(call, user);
  }

  /** Per remote user: video frames decoded, audio energy and packets, from getStats. */
  async mediaStats() {
    const out = {};
    const call = this.active;
    if (!call) return out;
    for (const [user, peer] of call.peers) {
      const r = { framesDecoded: 0, audioEnergy: 0, audioPackets: 0, videoPackets: 0, state: peer.pc.connectionState };
      const stats = await peer.pc.getStats();
      // The pair ICE selected: which kinds of candidate carry the media
      // (host, srflx, prflx, relay) and between which addresses.
      stats.forEach((s) => {
        if (s.type !== 'transport' || !s.selectedCandidatePairId) return;
        const pair = stats.get(s.selectedCandidatePairId);
        const local = pair && stats.get(pair.localCandidateId);
        const remote = pair && stats.get(pair.remoteCandidateId);
        if (local) {
          r.localCandidateType = local.candidateType;
          r.localAddress = `${local.address || local.ip}:${local.port}`;
          if (local.relayProtocol) r.relayProtocol = local.relayProtocol;
        }
        if (remote) {
          r.remoteCandidateType = remote.candidateType;
          r.remoteAddress = `${remote.address || remote.ip}:${remote.port}`;
        }
      });
      stats.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          r.framesDecoded += s.framesDecoded || 0;
          r.videoPackets += s.packetsReceived || 0;
        } else if (s.kind === 'audio') {
          r.audioLevel = Math.max(r.audioLevel || 0, s.audioLevel || 0);
          r.audioEnergy += s.totalAudioEnergy || 0;
          r.audioPackets += s.packetsReceived || 0;
        }
      });
      out[user] = r;
    }
    return out;
  }

  /** A summary of the current call for the UI (null outside a call). */
  snapshot() {
    const call = this.active;
    if (!call) return null;
    return {
      callId: call.callId, state: call.state, mediaType: call.mediaType, sponsor: call.sponsor,
      connected: [...call.connected.keys()], ringing: [...call.ringing.keys()],
      audio: this.media.audio, video: this.media.video,
    };
  }
}
