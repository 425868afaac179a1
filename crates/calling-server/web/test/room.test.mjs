// The call's server room: the sponsor makes it closed to everyone but
// the call's members, members let in whom they add, and a refused
// `allow` (an open room of an older client) is no error for the user.
import { test } from 'node:test';
import assert from 'node:assert/strict';

globalThis.WebSocket ??= { OPEN: 1 };
const { CallingClient } = await import('../calling.js');

function client(user) {
  const c = new CallingClient({});
  const sent = [];
  const errors = [];
  c.addEventListener('error', (e) => errors.push(e.detail.code));
  c.userId = user;
  c.session = { timer: null };
  c.ws = { readyState: WebSocket.OPEN, send: (t) => sent.push(JSON.parse(t)) };
  return { c, sent, errors };
}

function callOf(c, sponsor, ringing) {
  const call = c.newCall({ callId: 'call-1', sponsor, state: 'connected', mediaType: 'audio' });
  for (const u of ringing) c.addRinging(call, u, { invite_id: `i-${u}`, inviter: sponsor });
  return call;
}

test('the sponsor joins the call room closed to all but the invitees', () => {
  const { c, sent } = client('alice');
  c.joinCallRoom(callOf(c, 'alice', ['bob', 'carol']));
  assert.deepEqual(sent.map((f) => [f.type, f.room, f.allow]), [['join', 'call-1', ['bob', 'carol']]]);
});

test('an invitee joins without a list of its own', () => {
  const { c, sent } = client('bob');
  c.joinCallRoom(callOf(c, 'alice', ['carol']));
  assert.equal(sent.length, 1);
  assert.equal(sent[0].type, 'join');
  assert.equal(sent[0].allow, undefined);
});

test('a member lets in only the parties the room does not admit yet', () => {
  const { c, sent } = client('alice');
  const call = callOf(c, 'alice', ['bob']);
  c.joinCallRoom(call);
  c.allowIntoRoom(call);
  assert.equal(sent.length, 1, 'nobody new: no allow');
  call.connected.set('dave', { party: 1, audio: true, video: false });
  c.allowIntoRoom(call);
  assert.deepEqual(sent.slice(1).map((f) => [f.type, f.users]), [['allow', ['dave']]]);
});

test('a refused allow is logged, not raised as an error', () => {
  const { c, sent, errors } = client('bob');
  const call = callOf(c, 'alice', []);
  c.joinCallRoom(call);
  call.connected.set('dave', { party: 1, audio: true, video: false });
  c.allowIntoRoom(call);
  const allow = sent.find((f) => f.type === 'allow');
  c.onFrame(JSON.stringify({ type: 'error', id: allow.id, code: 'not_allowed', message: 'open room' }));
  assert.deepEqual(errors, []);
  // A refused join still is one.
  const join = sent.find((f) => f.type === 'join');
  c.onFrame(JSON.stringify({ type: 'error', id: join.id, code: 'not_allowed', message: 'closed' }));
  assert.deepEqual(errors, ['not_allowed']);
});
