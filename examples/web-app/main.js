// The smallest TRTCCalling app: log in, call or be called (accepted at
// once), show both videos, hang up. Only the import and the `server`
// option differ from an app written for trtc-calling-js.
import TRTCCalling from 'calling-web';

const $ = (id) => document.getElementById(id);
const server = new URLSearchParams(location.search).get('server') || location.origin;
let trtcCalling = null;

function state(text) {
  $('state').textContent = text;
}

function wire(t) {
  const { EVENT } = TRTCCalling;
  t.on(EVENT.INVITED, async ({ inviteID, sponsor, inviteData }) => {
    state(`${sponsor} is calling`);
    await t.startLocalView({ userID: $('user').value, videoViewDomID: 'local' });
    await t.accept({ inviteID, roomID: inviteData.roomID, callType: inviteData.callType });
  });
  t.on(EVENT.USER_ENTER, ({ userID }) => {
    state(`in a call with ${userID}`);
    t.startRemoteView({ userID, videoViewDomID: 'remote' });
  });
  for (const e of [EVENT.REJECT, EVENT.LINE_BUSY, EVENT.NO_RESP]) {
    t.on(e, ({ userID }) => state(`${userID}: ${e}`));
  }
  t.on(EVENT.CALL_END, () => state('logged in'));
  t.on(EVENT.KICKED_OUT, () => state('logged out (logged in elsewhere)'));
  t.on(EVENT.ERROR, ({ message }) => console.warn(message));
}

$('login').onclick = async () => {
  try {
    trtcCalling = new TRTCCalling({ SDKAppID: Number($('app').value), server });
    wire(trtcCalling);
    await trtcCalling.login({ userID: $('user').value, userSig: $('sig').value });
    state('logged in');
  } catch (e) {
    state(`login failed: ${e.message}`);
  }
};

$('call').onclick = async () => {
  await trtcCalling.startLocalView({ userID: $('user').value, videoViewDomID: 'local' });
  await trtcCalling.call({ userID: $('callee').value, type: TRTCCalling.CALL_TYPE.VIDEO_CALL, timeout: 30 });
  state(`calling ${$('callee').value}`);
};

$('hangup').onclick = () => trtcCalling.hangup();
