// The client's outbox: call-layer frames written while the socket is down
// wait for the re-login instead of being lost. No browser needed: the
// socket is a stand-in object with WebSocket's readyState and send.
import { test } from 'node:test';
import assert from 'node:assert/strict';

globalThis.WebSocket ??= { OPEN: 1 };
const { CallingClient } = await import('../calling.js');

function client() {
  const c = new CallingClient({});
  const logs = [];
  c.addEventListener('log', (e) => logs.push(e.detail.text));
  c.userId = 'alice';
  c.session = { timer: null };
  return { c, logs };
}

function openSocket() {
  const sent = [];
  return { sent, ws: { readyState: WebSocket.OPEN, send: (t) => sent.push(JSON.parse(t)) } };
}

test('a send while reconnecting is held, then sent in order once back', () => {
  const { c } = client();
  c.ws = null;
  const first = c.sendPayload(['bob'], { kind: 'accept', call_id: 'c1' });
  const second = c.sendPayload(['bob'], { kind: 'hangup', call_id: 'c1' });
  assert.equal(c.outbox.length, 2);
  const { sent, ws } = openSocket();
  c.ws = ws;
  c.flushOutbox();
  assert.deepEqual(sent.map((f) => [f.id, f.payload.kind]), [[first, 'accept'], [second, 'hangup']]);
  assert.equal(c.outbox.length, 0);
});

test('what waited past the reconnect grace is dropped, and said so', () => {
  const { c, logs } = client();
  c.ws = null;
  c.sendPayload(['bob'], { kind: 'accept', call_id: 'c1' });
  c.outbox[0].at -= 60_000;
  c.sendPayload(['bob'], { kind: 'hangup', call_id: 'c1' });
  const { sent, ws } = openSocket();
  c.ws = ws;
  c.flushOutbox();
  assert.deepEqual(sent.map((f) => f.payload.kind), ['hangup']);
  assert.ok(logs.some((l) => /dropped accept to bob/.test(l)), logs.join('\n'));
});

test('a frame held again by a flush that failed keeps its age', () => {
  const { c } = client();
  c.ws = null;
  c.sendPayload(['bob'], { kind: 'accept', call_id: 'c1' });
  c.outbox[0].at -= 6_000;
  c.flushOutbox(); // the socket is still down: held again
  assert.equal(c.outbox.length, 1);
  c.outbox[0].at -= 6_000; // 12 s in all, past the 10 s grace
  const { sent, ws } = openSocket();
  c.ws = ws;
  c.flushOutbox();
  assert.deepEqual(sent, [], 'a stale frame went out');
});

test('the outbox is bounded and logging out empties it', () => {
  const { c, logs } = client();
  c.ws = null;
  for (let i = 0; i < 70; i++) c.sendPayload(['bob'], { kind: 'keepalive', call_id: `c${i}` });
  assert.equal(c.outbox.length, 64);
  assert.equal(c.outbox[0].frame.payload.call_id, 'c6');
  assert.ok(logs.some((l) => /too much held/.test(l)));
  c.endSession();
  assert.equal(c.outbox.length, 0);
});

test('with no session (logged out) nothing is held', () => {
  const { c, logs } = client();
  c.session = null;
  c.ws = null;
  c.sendPayload(['bob'], { kind: 'hangup', call_id: 'c1' });
  assert.equal(c.outbox.length, 0);
  assert.ok(logs.some((l) => /not connected: hangup to bob not sent/.test(l)));
});
