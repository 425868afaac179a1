// Types of calling-web: the TRTCCalling Web API over calling-server.
// The JavaScript is trtc-calling.js (default export) and calling.js
// (the protocol client, `calling-web/client`).

/** TRTCCalling's call types. */
export declare const CALL_TYPE: Readonly<{ AUDIO_CALL: 1; VIDEO_CALL: 2 }>;
export type CallType = 1 | 2;

/** Event names (trtc-calling-js's values; the last group is ours). */
export declare const EVENT: Readonly<{
  ERROR: 'error';
  SDK_READY: 'sdkReady';
  INVITED: 'invited';
  USER_ACCEPT: 'userAccept';
  USER_ENTER: 'userEnter';
  USER_LEAVE: 'userLeave';
  REJECT: 'reject';
  NO_RESP: 'noResp';
  LINE_BUSY: 'lineBusy';
  CALLING_CANCEL: 'callingCancel';
  CALLING_TIMEOUT: 'callingTimeout';
  CALL_END: 'callEnd';
  KICKED_OUT: 'kickedOut';
  USER_VIDEO_AVAILABLE: 'userVideoAvailable';
  USER_AUDIO_AVAILABLE: 'userAudioAvailable';
  USER_VOICE_VOLUME: 'userVoiceVolume';
  GROUP_CALL_INVITEE_LIST_UPDATE: 'groupCallInviteeListUpdate';
  CALL_TYPE_CHANGED: 'callTypeChanged';
  LOGIN_EXPIRED: 'loginExpired';
  LOGGED_OUT: 'loggedOut';
  CONNECTION_STATE_CHANGED: 'connectionStateChanged';
  SWITCH_REQUEST: 'switchRequest';
  SWITCH_REFUSED: 'switchRefused';
  LOCAL_DEVICE_PROBLEM: 'localDeviceProblem';
  MEDIA_INTERRUPTED: 'mediaInterrupted';
  MEDIA_RESTORED: 'mediaRestored';
  MEDIA_FAILED: 'mediaFailed';
  LOG: 'log';
}>;

export type ConnectionState = 'disconnected' | 'connecting' | 'connected' | 'reconnecting';
export declare const CONNECTION_STATE: Readonly<{
  DISCONNECTED: 'disconnected'; CONNECTING: 'connecting'; CONNECTED: 'connected'; RECONNECTING: 'reconnecting';
}>;

/** Why a call ended. */
export type EndReason =
  | 'hangup' | 'rejected' | 'busy' | 'no_answer' | 'cancelled' | 'timeout'
  | 'disconnected' | 'media_failed' | 'join_failed';

/** The payload each event carries. */
export interface EventPayloads {
  error: { code: string; message: string };
  sdkReady: { userID: string };
  invited: {
    inviteID: string;
    sponsor: string;
    /** The others invited with us. */
    userIDList: string[];
    isFromGroup: boolean;
    inviteData: { version: number; callType: CallType; roomID: number };
    /** Ours: the call id, and who sent this invite (the sponsor or a member). */
    callID: string;
    inviter: string;
  };
  userAccept: { userID: string };
  userEnter: { userID: string };
  userLeave: { userID: string };
  reject: { userID: string };
  noResp: { userID: string; userIDList: string[]; reason: 'timeout' | 'offline' };
  lineBusy: { userID: string };
  callingCancel: { inviteID: string | null; userID: string | null };
  callingTimeout: { inviteID: string | null };
  callEnd: { reason: EndReason; callID: string; /** seconds connected */ callEnd: number };
  kickedOut: Record<string, never>;
  userVideoAvailable: { userID: string; isVideoAvailable: boolean };
  userAudioAvailable: { userID: string; isAudioAvailable: boolean };
  /** 0..100, every 500 ms per remote user, from the received audio. */
  userVoiceVolume: { userID: string; volume: number };
  groupCallInviteeListUpdate: { userIDList: string[] };
  callTypeChanged: { userID: string; oldCallType: CallType; newCallType: CallType };
  loginExpired: { code: string };
  loggedOut: { reason: 'logout' | 'kicked_out' | 'login_expired' | 'login_refused' | 'closed'; code?: string };
  connectionStateChanged: { prevState: ConnectionState; state: ConnectionState };
  switchRequest: { userID: string; requestID: number; callType: CallType };
  switchRefused: { userIDList: string[] };
  localDeviceProblem: { deviceType: 'audio' | 'video'; message: string };
  mediaInterrupted: { userID: string };
  mediaRestored: { userID: string; gapMs: number };
  mediaFailed: { userID: string };
  log: { text: string; level: 'info' | 'debug' };
}

export type EventName = keyof EventPayloads;

/** Thrown (or rejected with) for bad arguments and misuse; `code` is stable. */
export declare class TRTCCallingError extends Error {
  readonly code: string;
  constructor(code: string, message: string);
}

export interface TRTCCallingOptions {
  /** The server's app id (`calling-server --sdk-app-id`). */
  SDKAppID: number;
  /** The server: `https://host`, `wss://host/ws`, ...; default the page's own origin at /ws. */
  server?: string;
  /** Fixed ICE servers instead of those the server hands out at login. */
  iceServers?: RTCIceServer[];
  /** Media through TURN only (iceTransportPolicy 'relay'). */
  relayOnly?: boolean;
  /** How long broken media may take to come back by ICE restart (ms, 15000). */
  mediaRestoreTimeoutMs?: number;
  /** How long a party whose connection died may take to come back (ms, 10000). */
  reconnectGraceMs?: number;
  /** Answer offers with a=setup:passive (default true). */
  passiveDtls?: boolean;
}

export interface DeviceInfo { deviceId: string; label: string; groupId: string }
export interface ViewOptions { userID: string; videoViewDomID: string }

export default class TRTCCalling {
  static readonly EVENT: typeof EVENT;
  static readonly CALL_TYPE: typeof CALL_TYPE;
  static readonly CONNECTION_STATE: typeof CONNECTION_STATE;
  static readonly VERSION: string;

  constructor(options: TRTCCallingOptions);
  readonly SDKAppID: number;
  /** The WebSocket URL in use. */
  readonly server: string;
  readonly connectionState: ConnectionState;
  /** The logged-in user, or null. */
  readonly userID: string | null;
  /** The protocol client underneath (calling.js). */
  readonly client: CallingClient;

  on<E extends EventName>(event: E | string, callback: (payload: EventPayloads[E]) => void, context?: unknown): void;
  off<E extends EventName>(event: E | string, callback: (payload: EventPayloads[E]) => void, context?: unknown): void;

  login(options: { userID: string; userSig: string }): Promise<void>;
  logout(): Promise<void>;

  call(options: { userID: string; type: CallType; timeout?: number }): Promise<void>;
  groupCall(options: { userIDList: string[]; type: CallType; groupID?: string; timeout?: number }): Promise<void>;
  accept(options?: { inviteID?: string; roomID?: number; callType?: CallType }): Promise<void>;
  reject(options?: { inviteID?: string; isBusy?: boolean; callType?: CallType }): Promise<void>;
  hangup(): Promise<void>;
  /** Joins a running call with a ticket a member handed out. */
  joinCall(options: { callID: string; ticket: string }): Promise<void>;
  /** The current call's id and join ticket, to hand to someone who should join. */
  getJoinTicket(): { callID: string; ticket: string } | null;

  startRemoteView(options: ViewOptions): Promise<void>;
  stopRemoteView(options: ViewOptions): Promise<void>;
  startLocalView(options: ViewOptions): Promise<void>;
  stopLocalView(options: ViewOptions): Promise<void>;

  openCamera(): Promise<void>;
  closeCamera(): Promise<void>;
  setMicMute(isMute: boolean): void;
  setVideoQuality(profile: '480p' | '720p' | '1080p'): Promise<void>;
  /** Resolves true when every other party agreed. */
  switchToVideoCall(): Promise<boolean>;
  switchToAudioCall(): Promise<boolean>;
  answerSwitch(options: { requestID: number; accept: boolean }): void;
  getCameras(): Promise<DeviceInfo[]>;
  getMicrophones(): Promise<DeviceInfo[]>;
  switchDevice(options: { deviceType: 'video' | 'audio'; deviceId: string }): Promise<void>;
}

export { TRTCCalling };

/** The protocol client (calling.js); events are CustomEvents with `detail`. */
export declare class CallingClient extends EventTarget {
  constructor(options?: Omit<TRTCCallingOptions, 'SDKAppID' | 'server'> & { mediaConstraints?: MediaStreamConstraints });
  readonly userId: string | null;
  readonly loggedIn: boolean;
  readonly reconnecting: boolean;
  login(url: string, sdkAppId: number, userId: string, userSig: string): Promise<unknown>;
  logout(): Promise<void>;
  call(users: string[], mediaType: 'audio' | 'video', timeoutS?: number, options?: { group?: boolean; groupID?: string | null }): Promise<string>;
  accept(): Promise<void>;
  reject(options?: { busy?: boolean }): Promise<void>;
  hangup(): Promise<void>;
  join(callId: string, ticket: string): Promise<string>;
  joinTicket(): string | null;
  setMicMute(muted: boolean): void;
  setCamera(on: boolean): void;
  requestSwitch(mediaType: 'audio' | 'video'): Promise<boolean>;
  answerSwitch(requestId: number, accept: boolean): void;
  useDevice(kind: 'audio' | 'video', deviceId: string | null): Promise<void>;
  mediaStats(): Promise<Record<string, {
    framesDecoded: number; audioEnergy: number; audioPackets: number; videoPackets: number;
    audioLevel?: number; state: RTCPeerConnectionState;
  }>>;
}

export declare class CallingError extends Error {
  readonly code: string;
  constructor(code: string, message: string);
}

/** The wait before reconnect attempt `attempt` (ms): uniform in [d/2, d], d = min(100 * 2^attempt, 5000). */
export declare function reconnectDelay(attempt: number, random?: () => number): number;
