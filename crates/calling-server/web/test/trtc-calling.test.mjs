// Unit tests of the package where no browser is needed: argument checks,
// the event mapping, the backoff. `node --test` in crates/calling-server/web
// (scripts/test.sh runs them).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import TRTCCalling, {
  CALL_TYPE, EVENT, TRTCCallingError, callArgs, groupCallArgs, viewArgs, eventName, mapEvent,
  reconnectDelay, serverURL, defaultServer, mediaTypeOf,
} from '../trtc-calling.js';

const refused = (f, code = 'invalid_argument') => assert.throws(f, (e) => e instanceof TRTCCallingError && e.code === code);

test('call takes one object and refuses the old positional form', () => {
  assert.deepEqual(callArgs({ userID: 'bob', type: CALL_TYPE.VIDEO_CALL, timeout: 30 }), { users: ['bob'], mediaType: 'video', timeout: 30 });
  assert.deepEqual(callArgs({ userID: 'bob', type: 1 }), { users: ['bob'], mediaType: 'audio', timeout: 30 });
  // call('bob', 'video') must not ring "b" and "o".
  refused(() => callArgs('bob'));
  refused(() => callArgs(['bob']));
  refused(() => callArgs(null));
  refused(() => callArgs({ userID: ['bob'], type: 2 }));
  refused(() => callArgs({ userID: 'bob', type: 'video' }));
  refused(() => callArgs({ userID: 'bob', type: 3 }));
  refused(() => callArgs({ userID: 'bo b', type: 2 }));
  refused(() => callArgs({ userID: '', type: 2 }));
  refused(() => callArgs({ userID: 'x'.repeat(33), type: 2 }));
  refused(() => callArgs({ userID: 'bob', type: 2, timeout: -1 }));
  refused(() => callArgs({ userID: 'bob', type: 2, timeout: '30' }));
  assert.equal(callArgs({ userID: 'bob', type: 2, timeout: 0 }).timeout, 0);
});

test('groupCall takes a non-empty list of valid ids, deduplicated', () => {
  assert.deepEqual(groupCallArgs({ userIDList: ['b', 'c', 'b'], type: 2, groupID: 'g1' }), {
    users: ['b', 'c'], mediaType: 'video', timeout: 30, groupID: 'g1',
  });
  refused(() => groupCallArgs({ userIDList: 'bob', type: 2 }));
  refused(() => groupCallArgs({ userIDList: [], type: 2 }));
  refused(() => groupCallArgs({ userIDList: ['ok', 7], type: 2 }));
  refused(() => groupCallArgs({ userIDList: ['ok'], type: 2, groupID: 5 }));
});

test('the error names the bad field and what it should be', () => {
  try {
    callArgs({ userID: 'bob', type: 'video' });
    assert.fail('no error');
  } catch (e) {
    assert.match(e.message, /type must be TRTCCalling.CALL_TYPE.AUDIO_CALL \(1\) or VIDEO_CALL \(2\)/);
    assert.match(e.message, /"video"/);
  }
});

test('views need a user id and a DOM id', () => {
  assert.deepEqual(viewArgs('startRemoteView', { userID: 'bob', videoViewDomID: 'v' }), { userID: 'bob', domID: 'v' });
  refused(() => viewArgs('startRemoteView', { userID: 'bob' }));
  refused(() => viewArgs('startRemoteView', 'v'));
});

test('call types map both ways', () => {
  assert.equal(mediaTypeOf(1), 'audio');
  assert.equal(mediaTypeOf(2), 'video');
  refused(() => mediaTypeOf('2'));
});

test('event names: EVENT values and the old onX spelling', () => {
  assert.equal(eventName(EVENT.INVITED), 'invited');
  assert.equal(eventName('onInvited'), 'invited');
  assert.equal(eventName('onUserEnter'), 'userEnter');
  refused(() => eventName('invitedd'));
  refused(() => eventName(undefined));
  for (const key of ['INVITED', 'REJECT', 'NO_RESP', 'LINE_BUSY', 'CALLING_CANCEL', 'CALLING_TIMEOUT', 'USER_ENTER',
    'USER_LEAVE', 'CALL_END', 'KICKED_OUT', 'USER_VIDEO_AVAILABLE', 'USER_AUDIO_AVAILABLE', 'USER_VOICE_VOLUME',
    'ERROR', 'SDK_READY', 'USER_ACCEPT', 'GROUP_CALL_INVITEE_LIST_UPDATE', 'CALL_TYPE_CHANGED']) {
    assert.equal(typeof TRTCCalling.EVENT[key], 'string', key);
  }
});

test('client events become TRTCCalling payloads', () => {
  const [[name, invited]] = mapEvent('invited', {
    inviteId: 'i1', sponsor: 'alice', inviter: 'alice', callId: 'c1', mediaType: 'audio', isGroup: true,
    users: ['alice', 'bob', 'carol'], roomId: 42,
  }, { self: 'bob' });
  assert.equal(name, EVENT.INVITED);
  assert.deepEqual(invited.userIDList, ['carol']);
  assert.deepEqual(invited.inviteData, { version: 1, callType: 1, roomID: 42 });
  assert.equal(invited.isFromGroup, true);
  assert.equal(invited.inviteID, 'i1');
  assert.deepEqual(mapEvent('noResp', { user: 'bob', reason: 'offline' }), [[EVENT.NO_RESP, { userID: 'bob', userIDList: ['bob'], reason: 'offline' }]]);
  assert.deepEqual(mapEvent('userVideoAvailable', { user: 'bob', available: false }), [[EVENT.USER_VIDEO_AVAILABLE, { userID: 'bob', isVideoAvailable: false }]]);
  assert.deepEqual(mapEvent('userAudioAvailable', { user: 'bob', available: true }), [[EVENT.USER_AUDIO_AVAILABLE, { userID: 'bob', isAudioAvailable: true }]]);
  // The sponsor also hears USER_ACCEPT, first.
  assert.deepEqual(mapEvent('userEnter', { user: 'bob' }, { sponsor: 'alice', self: 'alice' }).map(([n]) => n), [EVENT.USER_ACCEPT, EVENT.USER_ENTER]);
  assert.deepEqual(mapEvent('userEnter', { user: 'carol' }, { sponsor: 'alice', self: 'bob' }).map(([n]) => n), [EVENT.USER_ENTER]);
  assert.deepEqual(mapEvent('mediaTypeChanged', { user: 'bob', from: 'audio', to: 'video' })[0][1], { userID: 'bob', oldCallType: 1, newCallType: 2 });
  const problem = mapEvent('error', { code: 'camera_unavailable', message: 'no camera' });
  assert.deepEqual(problem.map(([n]) => n), [EVENT.ERROR, EVENT.LOCAL_DEVICE_PROBLEM]);
  assert.equal(problem[1][1].deviceType, 'video');
  assert.equal(mapEvent('callEnd', { reason: 'hangup' }, { connectedAt: 1000, now: 13_400 })[0][1].callEnd, 12);
  assert.deepEqual(mapEvent('inviteeListUpdate', { users: ['dave'] }), [[EVENT.GROUP_CALL_INVITEE_LIST_UPDATE, { userIDList: ['dave'] }]]);
  assert.deepEqual(mapEvent('remoteStream', {}), []);
});

test('reconnect backoff: [d/2, d], d from 100 ms doubling to 5 s', () => {
  assert.equal(reconnectDelay(0, () => 0), 50);
  assert.equal(reconnectDelay(0, () => 0.999999), 100);
  assert.equal(reconnectDelay(1, () => 0), 100);
  assert.equal(reconnectDelay(3, () => 0.5), 600);
  for (const n of [6, 7, 20, 1000]) {
    assert.equal(reconnectDelay(n, () => 0), 2500);
    assert.equal(reconnectDelay(n, () => 0.999999), 5000);
  }
  assert.equal(reconnectDelay(-3, () => 0), 50);
  for (let i = 0; i < 100; i += 1) {
    const d = reconnectDelay(i % 10);
    assert.ok(d >= 50 && d <= 5000, String(d));
  }
});

test('server URLs: http(s) and ws(s), with /ws added', () => {
  assert.equal(serverURL('http://127.0.0.1:8080'), 'ws://127.0.0.1:8080/ws');
  assert.equal(serverURL('https://calls.example/'), 'wss://calls.example/ws');
  assert.equal(serverURL('wss://calls.example/ws'), 'wss://calls.example/ws');
  refused(() => serverURL('calls.example'));
  assert.equal(defaultServer({ protocol: 'https:', host: 'a.example:8443' }), 'wss://a.example:8443/ws');
  assert.equal(defaultServer({ protocol: 'http:', host: '127.0.0.1:9' }), 'ws://127.0.0.1:9/ws');
});

test('the constructor checks SDKAppID and needs a server outside a page', () => {
  refused(() => new TRTCCalling());
  refused(() => new TRTCCalling({ SDKAppID: '1400000000', server: 'ws://x/ws' }));
  refused(() => new TRTCCalling({ SDKAppID: 1400000000 }));
  const t = new TRTCCalling({ SDKAppID: 1400000000, server: 'http://127.0.0.1:1' });
  assert.equal(t.server, 'ws://127.0.0.1:1/ws');
});

test('on / off with a context; calls before login are refused', async () => {
  const t = new TRTCCalling({ SDKAppID: 1, server: 'ws://127.0.0.1:1/ws' });
  const seen = [];
  const ctx = { name: 'ctx' };
  function handler(d) { seen.push([this.name, d.userID]); }
  t.on(EVENT.REJECT, handler, ctx);
  t.on('onLineBusy', handler, ctx);
  t.client.emit('reject', { user: 'bob' });
  t.client.emit('lineBusy', { user: 'carol' });
  t.off(EVENT.REJECT, handler, ctx);
  t.client.emit('reject', { user: 'dave' });
  assert.deepEqual(seen, [['ctx', 'bob'], ['ctx', 'carol']]);
  refused(() => t.on(EVENT.REJECT, 'not a function'));
  await assert.rejects(t.call({ userID: 'bob', type: 2 }), (e) => e.code === 'not_logged_in');
  await assert.rejects(t.call('bob', 'video'), (e) => e.code === 'invalid_argument');
  await assert.rejects(t.accept({}), (e) => e.code === 'no_invite');
  refused(() => t.setMicMute('yes'));
  await assert.rejects(t.setVideoQuality('4k'), (e) => e.code === 'invalid_argument');
  await assert.rejects(t.switchDevice({ deviceType: 'screen', deviceId: 'x' }), (e) => e.code === 'invalid_argument');
  await assert.rejects(t.login({ userID: 'alice' }), (e) => e.code === 'invalid_argument');
});

test('the engine refuses a string where a list of users belongs', async () => {
  const t = new TRTCCalling({ SDKAppID: 1, server: 'ws://127.0.0.1:1/ws' });
  t.client.userId = 'alice';
  await assert.rejects(t.client.call('bob', 'video', 30), (e) => e.code === 'invalid_argument');
  // Logged in but the socket is down (reconnecting): no invite is sent.
  await assert.rejects(t.call({ userID: 'bob', type: 2 }), (e) => e.code === 'not_connected');
  assert.equal(t.client.active, null);
  t.client.userId = null;
});

test('VERSION is package.json\'s', async () => {
  const { readFile } = await import('node:fs/promises');
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'));
  assert.equal(TRTCCalling.VERSION, pkg.version);
});
