// trtc-calling.js: the TRTCCalling Web API (trtc-calling-js) over
// calling-server, so that an app written for TRTCCalling switches by
// changing its import and its constructor options. The protocol itself is
// calling.js (CallingClient); this file maps the TRTCCalling methods,
// arguments and events onto it, and refuses bad arguments with a
// TRTCCallingError (a `code` and a message) instead of guessing.
//
//   import TRTCCalling from 'calling-web';
//   const trtcCalling = new TRTCCalling({ SDKAppID: 1400000000 });
//   trtcCalling.on(TRTCCalling.EVENT.INVITED, ({ inviteID, inviteData }) =>
//     trtcCalling.accept({ inviteID, roomID: inviteData.roomID, callType: inviteData.callType }));
//   await trtcCalling.login({ userID: 'alice', userSig });
//   await trtcCalling.call({ userID: 'bob', type: TRTCCalling.CALL_TYPE.VIDEO_CALL, timeout: 30 });
//
// What differs from trtc-calling-js, and why: docs/WEB.md.

import { CallingClient, CallingError, reconnectDelay } from './calling.js';

/** This package's version (package.json's). */
export const VERSION = '0.2.0';

/** The call types of TRTCCalling: 1 audio, 2 video. */
export const CALL_TYPE = Object.freeze({ AUDIO_CALL: 1, VIDEO_CALL: 2 });

/**
 * Event names, as trtc-calling-js spells them (the values are what `on`
 * takes; the names are TRTCCalling.EVENT's keys). The last group is ours.
 */
export const EVENT = Object.freeze({
  ERROR: 'error',
  SDK_READY: 'sdkReady',
  INVITED: 'invited',
  USER_ACCEPT: 'userAccept',
  USER_ENTER: 'userEnter',
  USER_LEAVE: 'userLeave',
  REJECT: 'reject',
  NO_RESP: 'noResp',
  LINE_BUSY: 'lineBusy',
  CALLING_CANCEL: 'callingCancel',
  CALLING_TIMEOUT: 'callingTimeout',
  CALL_END: 'callEnd',
  KICKED_OUT: 'kickedOut',
  USER_VIDEO_AVAILABLE: 'userVideoAvailable',
  USER_AUDIO_AVAILABLE: 'userAudioAvailable',
  USER_VOICE_VOLUME: 'userVoiceVolume',
  GROUP_CALL_INVITEE_LIST_UPDATE: 'groupCallInviteeListUpdate',
  CALL_TYPE_CHANGED: 'callTypeChanged',
  // Ours: the session and the media, which TRTCCalling's cloud hides.
  LOGIN_EXPIRED: 'loginExpired',
  LOGGED_OUT: 'loggedOut',
  CONNECTION_STATE_CHANGED: 'connectionStateChanged',
  SWITCH_REQUEST: 'switchRequest',
  SWITCH_REFUSED: 'switchRefused',
  LOCAL_DEVICE_PROBLEM: 'localDeviceProblem',
  MEDIA_INTERRUPTED: 'mediaInterrupted',
  MEDIA_RESTORED: 'mediaRestored',
  MEDIA_FAILED: 'mediaFailed',
  LOG: 'log',
});

const EVENT_NAMES = new Set(Object.values(EVENT));

/** Video sizes setVideoQuality takes. */
export const VIDEO_PROFILES = Object.freeze({
  '480p': { width: 640, height: 480 },
  '720p': { width: 1280, height: 720 },
  '1080p': { width: 1920, height: 1080 },
});

const USER_ID_RE = /^[A-Za-z0-9_-]{1,32}$/;
const VOLUME_EVERY_MS = 500;

/**
 * The error every method throws for bad arguments or misuse. `code` is
 * stable: `invalid_argument`, `not_logged_in`, `already_logged_in`,
 * `busy`, `no_invite`, `not_in_call`, ..., or the server's login codes
 * (`bad_signature`, `sig_expired`, `wrong_app`, ...).
 */
export class TRTCCallingError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'TRTCCallingError';
    this.code = code;
  }
}

function bad(message) {
  return new TRTCCallingError('invalid_argument', message);
}

function wrap(e) {
  if (e instanceof TRTCCallingError) return e;
  if (e instanceof CallingError) return new TRTCCallingError(e.code, e.message);
  return new TRTCCallingError('internal', e && e.message ? e.message : String(e));
}

/** Checks that `options` is a plain object; names `method` in the error. */
function object(method, options, example) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw bad(`${method} takes one object, e.g. ${method}(${example})`);
  }
  return options;
}

/** A user id by TRTCCalling's rule, or a TRTCCallingError naming `what`. */
export function checkUserID(value, what = 'userID') {
  if (typeof value !== 'string' || !USER_ID_RE.test(value)) {
    throw bad(`${what} must be a string of 1 to 32 letters, digits, '-' or '_' (got ${JSON.stringify(value)})`);
  }
  return value;
}

/** TRTCCalling's call type (1 or 2) as our media type. */
export function mediaTypeOf(type, what = 'type') {
  if (type === CALL_TYPE.AUDIO_CALL) return 'audio';
  if (type === CALL_TYPE.VIDEO_CALL) return 'video';
  throw bad(`${what} must be TRTCCalling.CALL_TYPE.AUDIO_CALL (1) or VIDEO_CALL (2) (got ${JSON.stringify(type)})`);
}

/** Our media type as TRTCCalling's call type. */
export function callTypeOf(mediaType) {
  return mediaType === 'audio' ? CALL_TYPE.AUDIO_CALL : CALL_TYPE.VIDEO_CALL;
}

function checkTimeout(timeout) {
  if (timeout === undefined) return 30;
  if (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout < 0 || timeout > 86400) {
    throw bad(`timeout is a number of seconds from 0 (no timeout) to 86400 (got ${JSON.stringify(timeout)})`);
  }
  return Math.round(timeout);
}

/** The checked arguments of call({userID, type, timeout}). */
export function callArgs(options) {
  const o = object('call', options, "{userID: 'bob', type: TRTCCalling.CALL_TYPE.VIDEO_CALL, timeout: 30}");
  return { users: [checkUserID(o.userID)], mediaType: mediaTypeOf(o.type), timeout: checkTimeout(o.timeout) };
}

/** The checked arguments of groupCall({userIDList, type, groupID, timeout}). */
export function groupCallArgs(options) {
  const o = object('groupCall', options, "{userIDList: ['bob', 'carol'], type: TRTCCalling.CALL_TYPE.VIDEO_CALL}");
  if (!Array.isArray(o.userIDList) || o.userIDList.length === 0) {
    throw bad(`userIDList must be a non-empty array of user ids (got ${JSON.stringify(o.userIDList)})`);
  }
  o.userIDList.forEach((u, i) => checkUserID(u, `userIDList[${i}]`));
  if (o.groupID !== undefined && o.groupID !== null && o.groupID !== '' && typeof o.groupID !== 'string') {
    throw bad(`groupID is an optional string (got ${JSON.stringify(o.groupID)})`);
  }
  return {
    users: [...new Set(o.userIDList)], mediaType: mediaTypeOf(o.type), timeout: checkTimeout(o.timeout),
    groupID: o.groupID || null,
  };
}

/** The checked `{userID, videoViewDomID}` of the view methods. */
export function viewArgs(method, options) {
  const o = object(method, options, "{userID: 'bob', videoViewDomID: 'remote-video'}");
  checkUserID(o.userID);
  if (typeof o.videoViewDomID !== 'string' || o.videoViewDomID === '') {
    throw bad(`videoViewDomID must be the id of a DOM element (got ${JSON.stringify(o.videoViewDomID)})`);
  }
  return { userID: o.userID, domID: o.videoViewDomID };
}

/**
 * The trtc-calling-js event name `name` stands for: an EVENT value, or the
 * old 0.x spelling `onInvited` / `onUserEnter` ... of the same event.
 */
export function eventName(name) {
  if (typeof name !== 'string') throw bad(`the event name must be a string, e.g. TRTCCalling.EVENT.INVITED (got ${JSON.stringify(name)})`);
  if (EVENT_NAMES.has(name)) return name;
  if (/^on[A-Z]/.test(name)) {
    const bare = name[2].toLowerCase() + name.slice(3);
    if (EVENT_NAMES.has(bare)) return bare;
  }
  throw bad(`unknown event ${JSON.stringify(name)}: use one of TRTCCalling.EVENT`);
}

/**
 * The TRTCCalling payload (or payloads) for one CallingClient event, given
 * what the adapter knows of the call: `[eventName, payload]` pairs; empty
 * for events TRTCCalling has no counterpart for. Pure, for the tests.
 */
export function mapEvent(type, d, state = {}) {
  switch (type) {
    case 'invited': return [[EVENT.INVITED, {
      inviteID: d.inviteId, sponsor: d.sponsor, userIDList: d.users.filter((u) => u !== d.sponsor && u !== state.self),
      isFromGroup: d.isGroup, inviteData: { version: 1, callType: callTypeOf(d.mediaType), roomID: d.roomId },
      callID: d.callId, inviter: d.inviter,
    }]];
    case 'userEnter': {
      const out = [[EVENT.USER_ENTER, { userID: d.user }]];
      if (state.sponsor === state.self) out.unshift([EVENT.USER_ACCEPT, { userID: d.user }]);
      return out;
    }
    case 'userLeave': return [[EVENT.USER_LEAVE, { userID: d.user }]];
    case 'reject': return [[EVENT.REJECT, { userID: d.user }]];
    case 'lineBusy': return [[EVENT.LINE_BUSY, { userID: d.user }]];
    case 'noResp': return [[EVENT.NO_RESP, { userID: d.user, userIDList: [d.user], reason: d.reason }]];
    case 'callingCancel': return [[EVENT.CALLING_CANCEL, { inviteID: state.inviteID || null, userID: d.user || null }]];
    case 'callingTimeout': return [[EVENT.CALLING_TIMEOUT, { inviteID: state.inviteID || null }]];
    case 'callEnd': return [[EVENT.CALL_END, {
      reason: d.reason, callID: d.callId,
      // seconds, as TRTCCalling's inviteData.callEnd
      callEnd: state.connectedAt ? Math.round((state.now - state.connectedAt) / 1000) : 0,
    }]];
    case 'userAudioAvailable': return [[EVENT.USER_AUDIO_AVAILABLE, { userID: d.user, isAudioAvailable: d.available }]];
    case 'userVideoAvailable': return [[EVENT.USER_VIDEO_AVAILABLE, { userID: d.user, isVideoAvailable: d.available }]];
    case 'kickedOut': return [[EVENT.KICKED_OUT, {}]];
    case 'loginExpired': return [[EVENT.LOGIN_EXPIRED, { code: d.code || 'sig_expired' }]];
    case 'loggedOut': return [[EVENT.LOGGED_OUT, { reason: d.reason }]];
    case 'mediaTypeChanged': return [[EVENT.CALL_TYPE_CHANGED, {
      userID: d.user, oldCallType: callTypeOf(d.from), newCallType: callTypeOf(d.to),
    }]];
    case 'switchRequest': return [[EVENT.SWITCH_REQUEST, {
      userID: d.user, requestID: d.requestId, callType: callTypeOf(d.mediaType),
    }]];
    case 'switchRefused': return [[EVENT.SWITCH_REFUSED, { userIDList: d.users }]];
    case 'inviteeListUpdate': return [[EVENT.GROUP_CALL_INVITEE_LIST_UPDATE, { userIDList: d.users }]];
    case 'mediaInterrupted': return [[EVENT.MEDIA_INTERRUPTED, { userID: d.user }]];
    case 'mediaRestored': return [[EVENT.MEDIA_RESTORED, { userID: d.user, gapMs: d.gapMs }]];
    case 'mediaFailed': return [[EVENT.MEDIA_FAILED, { userID: d.user }]];
    case 'error': {
      const out = [[EVENT.ERROR, { code: d.code, message: d.message }]];
      if (d.code === 'camera_unavailable' || d.code === 'microphone_unavailable') {
        out.push([EVENT.LOCAL_DEVICE_PROBLEM, { deviceType: d.code === 'camera_unavailable' ? 'video' : 'audio', message: d.message }]);
      }
      return out;
    }
    case 'log': return [[EVENT.LOG, { text: d.text, level: d.level }]];
    default: return [];
  }
}

/** The connection states CONNECTION_STATE_CHANGED reports. */
export const CONNECTION_STATE = Object.freeze({
  DISCONNECTED: 'disconnected', CONNECTING: 'connecting', CONNECTED: 'connected', RECONNECTING: 'reconnecting',
});

/** The server's WebSocket URL for a page at `location` ({protocol, host}). */
export function defaultServer(location) {
  if (!location || !location.host) return null;
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
}

/** Turns `http(s)://host` (or ws(s)://host/ws) into the WebSocket URL. */
export function serverURL(server) {
  if (typeof server !== 'string' || !/^(wss?|https?):\/\//.test(server)) {
    throw bad(`server must be a ws://, wss://, http:// or https:// URL (got ${JSON.stringify(server)})`);
  }
  let url = server.replace(/^http/, 'ws');
  if (!/\/ws$/.test(url)) url = `${url.replace(/\/$/, '')}/ws`;
  return url;
}

/**
 * TRTCCalling over calling-server. Options: `SDKAppID` (required, the
 * server's app id), `server` (its URL; default the page's own origin at
 * `/ws`), and the CallingClient options `iceServers`, `relayOnly`,
 * `mediaRestoreTimeoutMs`, `reconnectGraceMs`, `passiveDtls`.
 */
export default class TRTCCalling {
  static EVENT = EVENT;

  static CALL_TYPE = CALL_TYPE;

  static VERSION = VERSION;

  static CONNECTION_STATE = CONNECTION_STATE;

  constructor(options) {
    const o = object('new TRTCCalling', options, '{SDKAppID: 1400000000}');
    if (!Number.isSafeInteger(o.SDKAppID) || o.SDKAppID <= 0) {
      throw bad(`SDKAppID must be a positive integer (got ${JSON.stringify(o.SDKAppID)})`);
    }
    this.SDKAppID = o.SDKAppID;
    const page = typeof location !== 'undefined' ? location : null;
    this.server = o.server !== undefined ? serverURL(o.server) : defaultServer(page);
    if (!this.server) throw bad('server is required outside a web page: new TRTCCalling({SDKAppID, server: "wss://host"})');
    this.client = new CallingClient({
      iceServers: o.iceServers, relayOnly: o.relayOnly, mediaRestoreTimeoutMs: o.mediaRestoreTimeoutMs,
      reconnectGraceMs: o.reconnectGraceMs, passiveDtls: o.passiveDtls,
    });
    this.listeners = new Map(); // event -> [{callback, context}]
    this.views = { local: null, remote: new Map() }; // domID per user
    this.remoteStreams = new Map();
    this.connectionState = CONNECTION_STATE.DISCONNECTED;
    this.callState = { sponsor: null, inviteID: null, connectedAt: null, self: null };
    this.volumeTimer = null;
    this.wire();
  }

  // ---- events --------------------------------------------------------------

  /** Subscribes `callback` (called with `this` = `context`) to `eventName`. */
  on(eventName_, callback, context) {
    const name = eventName(eventName_);
    if (typeof callback !== 'function') throw bad(`on(${JSON.stringify(eventName_)}, callback): callback must be a function`);
    if (!this.listeners.has(name)) this.listeners.set(name, []);
    this.listeners.get(name).push({ callback, context });
  }

  /** Unsubscribes what `on` subscribed (the same callback and context). */
  off(eventName_, callback, context) {
    const name = eventName(eventName_);
    const list = this.listeners.get(name);
    if (!list) return;
    const i = list.findIndex((l) => l.callback === callback && (context === undefined || l.context === context));
    if (i >= 0) list.splice(i, 1);
  }

  emit(name, payload) {
    for (const { callback, context } of [...(this.listeners.get(name) || [])]) {
      try {
        callback.call(context, payload);
      } catch (e) {
        // An app's handler that throws must not stop the others.
        setTimeout(() => { throw e; });
      }
    }
  }

  setConnectionState(state) {
    if (this.connectionState === state) return;
    const prev = this.connectionState;
    this.connectionState = state;
    this.emit(EVENT.CONNECTION_STATE_CHANGED, { prevState: prev, state });
  }

  wire() {
    const c = this.client;
    const types = [
      'invited', 'userEnter', 'userLeave', 'reject', 'lineBusy', 'noResp', 'callingCancel', 'callingTimeout',
      'callEnd', 'userAudioAvailable', 'userVideoAvailable', 'kickedOut', 'loginExpired', 'loggedOut',
      'mediaTypeChanged', 'switchRequest', 'switchRefused', 'mediaInterrupted', 'mediaRestored', 'mediaFailed',
      'inviteeListUpdate', 'error', 'log',
    ];
    for (const type of types) {
      c.addEventListener(type, (e) => this.onClientEvent(type, e.detail));
    }
    c.addEventListener('remoteStream', (e) => {
      this.remoteStreams.set(e.detail.user, e.detail.stream);
      const domID = this.views.remote.get(e.detail.user);
      if (domID) this.render(domID, e.detail.stream, false);
    });
    c.addEventListener('localStream', (e) => {
      if (this.views.local) this.render(this.views.local, e.detail.stream, true);
    });
    c.addEventListener('reconnecting', () => this.setConnectionState(CONNECTION_STATE.RECONNECTING));
    c.addEventListener('reconnected', () => this.setConnectionState(CONNECTION_STATE.CONNECTED));
  }

  onClientEvent(type, d) {
    const s = this.callState;
    s.self = this.client.userId;
    s.now = Date.now();
    if (type === 'invited') {
      s.sponsor = d.sponsor;
      s.inviteID = d.inviteId;
      const call = this.client.active;
      d = { ...d, roomId: call ? call.roomId : null };
    }
    if (type === 'userEnter' && !s.connectedAt) s.connectedAt = Date.now();
    for (const [name, payload] of mapEvent(type, d, s)) this.emit(name, payload);
    if (type === 'userLeave') this.remoteStreams.delete(d.user);
    if (type === 'callEnd') this.callOver();
    if (type === 'loggedOut' || type === 'kickedOut') this.setConnectionState(CONNECTION_STATE.DISCONNECTED);
  }

  callOver() {
    this.callState = { sponsor: null, inviteID: null, connectedAt: null, self: this.client.userId };
    clearInterval(this.volumeTimer);
    this.volumeTimer = null;
    this.remoteStreams.clear();
    for (const domID of this.views.remote.values()) this.unrender(domID);
    this.views.remote.clear();
    if (this.views.local) this.unrender(this.views.local);
    this.views.local = null;
  }

  startVolume() {
    if (this.volumeTimer) return;
    this.volumeTimer = setInterval(async () => {
      const stats = await this.client.mediaStats().catch(() => ({}));
      for (const [user, r] of Object.entries(stats)) {
        this.emit(EVENT.USER_VOICE_VOLUME, { userID: user, volume: Math.round(Math.min(1, r.audioLevel || 0) * 100) });
      }
    }, VOLUME_EVERY_MS);
  }

  // ---- the session ----------------------------------------------------------

  /** Logs in; resolves once the server accepted the UserSig (then SDK_READY). */
  async login(options) {
    const o = object('login', options, "{userID: 'alice', userSig}");
    checkUserID(o.userID);
    if (typeof o.userSig !== 'string' || o.userSig === '') throw bad('userSig must be the non-empty UserSig string your backend signed');
    this.setConnectionState(CONNECTION_STATE.CONNECTING);
    try {
      await this.client.login(this.server, this.SDKAppID, o.userID, o.userSig);
    } catch (e) {
      this.setConnectionState(CONNECTION_STATE.DISCONNECTED);
      throw wrap(e);
    }
    this.setConnectionState(CONNECTION_STATE.CONNECTED);
    this.emit(EVENT.SDK_READY, { userID: o.userID });
  }

  /** Hangs up any call and logs out. */
  async logout() {
    if (!this.client.session) return;
    await this.client.logout();
  }

  /** The logged-in user id, or null. */
  get userID() {
    return this.client.userId;
  }

  // ---- calls -----------------------------------------------------------------

  requireLogin() {
    if (!this.client.userId) throw new TRTCCallingError('not_logged_in', 'log in first: login({userID, userSig})');
  }

  /** Calls one user: call({userID, type, timeout}) (timeout in s, 0 = none). */
  async call(options) {
    const a = callArgs(options);
    this.requireLogin();
    if (a.users[0] === this.client.userId) throw bad('userID is our own: call someone else');
    this.callState.sponsor = this.client.userId;
    try {
      await this.client.call(a.users, a.mediaType, a.timeout);
    } catch (e) {
      throw wrap(e);
    }
    this.startVolume();
  }

  /** Calls several users: groupCall({userIDList, type, groupID, timeout}). */
  async groupCall(options) {
    const a = groupCallArgs(options);
    this.requireLogin();
    const users = a.users.filter((u) => u !== this.client.userId);
    if (users.length === 0) throw bad('userIDList names only ourselves');
    this.callState.sponsor = this.client.userId;
    try {
      await this.client.call(users, a.mediaType, a.timeout, { group: true, groupID: a.groupID });
    } catch (e) {
      throw wrap(e);
    }
    this.startVolume();
  }

  ringingInvite(method, options) {
    const o = object(method, options, '{inviteID}');
    const call = this.client.active;
    if (!call || call.state !== 'ringing') throw new TRTCCallingError('no_invite', `${method}: nothing is ringing`);
    if (o.inviteID !== undefined && o.inviteID !== call.inviteId) {
      throw new TRTCCallingError('stale_invite', `${method}: inviteID ${JSON.stringify(o.inviteID)} is not the invite that rings (${call.inviteId})`);
    }
    if (o.callType !== undefined) mediaTypeOf(o.callType, 'callType');
    return call;
  }

  /** Accepts the ringing invite: accept({inviteID, roomID, callType}). */
  async accept(options = {}) {
    this.ringingInvite('accept', options);
    try {
      await this.client.accept();
    } catch (e) {
      throw wrap(e);
    }
    this.startVolume();
  }

  /** Rejects the ringing invite: reject({inviteID, isBusy, callType}). */
  async reject(options = {}) {
    this.ringingInvite('reject', options);
    try {
      await this.client.reject({ busy: options.isBusy === true });
    } catch (e) {
      throw wrap(e);
    }
  }

  /** Leaves the call, cancels an unanswered one, or rejects a ringing one. */
  async hangup() {
    await this.client.hangup();
  }

  /** Joins a running call with a ticket a member gave: joinCall({callID, ticket}). */
  async joinCall(options) {
    const o = object('joinCall', options, "{callID, ticket: 'host:secret'}");
    this.requireLogin();
    try {
      await this.client.join(o.callID, o.ticket);
    } catch (e) {
      throw wrap(e);
    }
    this.callState.connectedAt = Date.now();
    this.startVolume();
  }

  /** The current call's id and join ticket ({callID, ticket}), or null. */
  getJoinTicket() {
    const ticket = this.client.joinTicket();
    return ticket ? { callID: this.client.active.callId, ticket } : null;
  }

  // ---- views -------------------------------------------------------------------

  /** The <video> inside (or at) the element `domID`, made if missing. */
  videoElement(domID) {
    const el = document.getElementById(domID);
    if (!el) throw bad(`no element with id ${JSON.stringify(domID)}`);
    if (el.tagName === 'VIDEO') return el;
    let video = el.querySelector('video[data-trtc-view]');
    if (!video) {
      video = document.createElement('video');
      video.dataset.trtcView = '1';
      video.autoplay = true;
      video.playsInline = true;
      video.style.width = '100%';
      video.style.height = '100%';
      el.append(video);
    }
    return video;
  }

  render(domID, stream, local) {
    const video = this.videoElement(domID);
    // The local view never plays our own sound back; a remote view plays it.
    video.muted = local;
    if (video.srcObject !== stream) video.srcObject = stream;
  }

  unrender(domID) {
    const el = typeof document !== 'undefined' && document.getElementById(domID);
    if (!el) return;
    const video = el.tagName === 'VIDEO' ? el : el.querySelector('video[data-trtc-view]');
    if (!video) return;
    video.srcObject = null;
    if (video.dataset.trtcView) video.remove();
  }

  /** Shows `userID`'s video (and plays its sound) in element `videoViewDomID`. */
  async startRemoteView(options) {
    const { userID, domID } = viewArgs('startRemoteView', options);
    this.videoElement(domID);
    this.views.remote.set(userID, domID);
    const stream = this.remoteStreams.get(userID);
    if (stream) this.render(domID, stream, false);
  }

  /** Stops showing `userID`'s video in element `videoViewDomID`. */
  async stopRemoteView(options) {
    const { userID, domID } = viewArgs('stopRemoteView', options);
    if (this.views.remote.get(userID) === domID) this.views.remote.delete(userID);
    this.unrender(domID);
  }

  /** Shows our own camera in element `videoViewDomID` (userID: ours). */
  async startLocalView(options) {
    const { domID } = viewArgs('startLocalView', options);
    this.videoElement(domID);
    this.views.local = domID;
    const call = this.client.active;
    if (call && call.localStream) this.render(domID, call.localStream, true);
  }

  /** Stops showing our own camera. */
  async stopLocalView(options) {
    const { domID } = viewArgs('stopLocalView', options);
    if (this.views.local === domID) this.views.local = null;
    this.unrender(domID);
  }

  // ---- local media -----------------------------------------------------------

  /** Turns the camera on (the others get USER_VIDEO_AVAILABLE true). */
  async openCamera() {
    const call = this.client.active;
    if (call && call.state === 'connected' && call.mediaType === 'video') {
      this.client.media.video = true;
      const ok = await this.client.addCamera(call);
      if (!ok) {
        this.client.media.video = false;
        throw new TRTCCallingError('camera_unavailable', 'the camera cannot be opened');
      }
    }
    this.client.setCamera(true);
  }

  /** Turns the camera off (the others get USER_VIDEO_AVAILABLE false). */
  async closeCamera() {
    this.client.setCamera(false);
  }

  /** Mutes (true) or unmutes (false) the microphone. */
  setMicMute(isMute) {
    if (typeof isMute !== 'boolean') throw bad(`setMicMute takes true (mute) or false (unmute) (got ${JSON.stringify(isMute)})`);
    this.client.setMicMute(isMute);
  }

  /** Sets the camera's size: '480p' (default), '720p' or '1080p'. */
  async setVideoQuality(profile) {
    const size = VIDEO_PROFILES[profile];
    if (typeof profile !== 'string' || !size) throw bad(`setVideoQuality takes '480p', '720p' or '1080p' (got ${JSON.stringify(profile)})`);
    await this.client.setVideoProfile(size);
  }

  /** Asks the others to turn this audio call into a video call; resolves whether all agreed. */
  async switchToVideoCall() {
    try {
      return await this.client.requestSwitch('video');
    } catch (e) {
      throw wrap(e);
    }
  }

  /** Turns this video call into an audio call (no one is asked). */
  async switchToAudioCall() {
    try {
      return await this.client.requestSwitch('audio');
    } catch (e) {
      throw wrap(e);
    }
  }

  /** Answers a SWITCH_REQUEST: answerSwitch({requestID, accept}). */
  answerSwitch(options) {
    const o = object('answerSwitch', options, '{requestID, accept: true}');
    if (!Number.isInteger(o.requestID)) throw bad('requestID is the SWITCH_REQUEST event\'s requestID');
    if (typeof o.accept !== 'boolean') throw bad('accept is true or false');
    try {
      this.client.answerSwitch(o.requestID, o.accept);
    } catch (e) {
      throw wrap(e);
    }
  }

  async devices(kind) {
    if (typeof navigator === 'undefined' || !navigator.mediaDevices) return [];
    const all = await navigator.mediaDevices.enumerateDevices();
    return all.filter((d) => d.kind === kind).map((d) => ({ deviceId: d.deviceId, label: d.label, groupId: d.groupId }));
  }

  /** The cameras: [{deviceId, label, groupId}]. */
  async getCameras() {
    return this.devices('videoinput');
  }

  /** The microphones: [{deviceId, label, groupId}]. */
  async getMicrophones() {
    return this.devices('audioinput');
  }

  /** Uses another device: switchDevice({deviceType: 'video' | 'audio', deviceId}). */
  async switchDevice(options) {
    const o = object('switchDevice', options, "{deviceType: 'video', deviceId}");
    if (o.deviceType !== 'video' && o.deviceType !== 'audio') throw bad(`deviceType is 'video' or 'audio' (got ${JSON.stringify(o.deviceType)})`);
    if (typeof o.deviceId !== 'string' || o.deviceId === '') throw bad('deviceId is a string from getCameras() / getMicrophones()');
    try {
      await this.client.useDevice(o.deviceType, o.deviceId);
    } catch (e) {
      throw wrap(e);
    }
  }
}

export { TRTCCalling, CallingClient, CallingError, reconnectDelay };
