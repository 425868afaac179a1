// Compiled by types.test.mjs: a bad call type must not type-check.
import TRTCCalling from '../index';
const t = new TRTCCalling({ SDKAppID: 1 });
t.call({ userID: 'bob', type: 3 });
