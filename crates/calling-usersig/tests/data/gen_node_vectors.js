// Produce UserSigs and PrivateMapKeys with the official Node package, for
// tests/official_vectors.rs. (The Python package has no PrivateMapKey.)
//
// Exact command (from this directory):
//
//     npm install --prefix /tmp/tlsnode tls-sig-api-v2@1.0.2
//     NODE_PATH=/tmp/tlsnode/node_modules node gen_node_vectors.js > node_vectors.txt
//
// The package reads the clock itself, so Date.now is pinned to TIME first.
// Output: one `name<TAB>usersig` line per vector.

const TIME = 1600000000;
Date.now = () => TIME * 1000;

const TLSSigAPIv2 = require('tls-sig-api-v2');

const APP = 1400000000;
const KEY = '5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e';
const api = new TLSSigAPIv2.Api(APP, KEY);

const vectors = [
  ['node_plain_xiaojun', api.genUserSig('xiaojun', 180 * 86400)],
  ['node_userbuf_abc', api.genSig('xiaojun', 180 * 86400, Buffer.from('abc'))],
  ['node_privmap_room_10000_all', api.genPrivateMapKey('xiaojun', 180 * 86400, 10000, 255)],
  ['node_privmap_room_str_42', api.genPrivateMapKeyWithStringRoomID('xiaojun', 300, '1000000040', 42)],
];
for (const [name, sig] of vectors) {
  console.log(name + '\t' + sig);
}
