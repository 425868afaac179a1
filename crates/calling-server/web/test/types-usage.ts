// Compiled by types.test.mjs: what an app writes against index.d.ts must type-check.
import TRTCCalling, { EVENT, CALL_TYPE, TRTCCallingError } from '../index';

async function main(sig: string) {
  const t = new TRTCCalling({ SDKAppID: 1400000000, server: 'https://calls.example' });
  t.on(TRTCCalling.EVENT.INVITED, ({ inviteID, inviteData }) => {
    t.accept({ inviteID, roomID: inviteData.roomID, callType: inviteData.callType });
  });
  t.on(EVENT.USER_VIDEO_AVAILABLE, ({ userID, isVideoAvailable }) => console.log(userID, isVideoAvailable));
  t.on(EVENT.NO_RESP, ({ userIDList, reason }) => console.log(userIDList.length, reason));
  await t.login({ userID: 'alice', userSig: sig });
  await t.call({ userID: 'bob', type: CALL_TYPE.VIDEO_CALL, timeout: 30 });
  await t.groupCall({ userIDList: ['bob', 'carol'], type: 1 });
  const agreed: boolean = await t.switchToVideoCall();
  await t.setVideoQuality('720p');
  const cams = await t.getCameras();
  await t.switchDevice({ deviceType: 'video', deviceId: cams[0].deviceId });
  const ticket = t.getJoinTicket();
  if (ticket) await t.joinCall(ticket);
  try { await t.hangup(); } catch (e) { if (e instanceof TRTCCallingError) console.log(e.code, agreed); }
}
main('x');
