// index.d.ts against what an app writes (types-usage.ts) and a misuse it
// must refuse (types-misuse.ts), with TypeScript's tsc (Debian's
// node-typescript, which scripts/setup.sh installs). Without tsc this test
// is skipped, loudly, and fails under CI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const tsc = (file) => spawnSync('tsc', ['--noEmit', '--strict', '--target', 'es2020', '--moduleResolution', 'node',
  '--lib', 'es2020,dom', file], { cwd: here, encoding: 'utf8' });
const have = !spawnSync('tsc', ['--version']).error;

test('index.d.ts types an app and refuses a bad call type', (t) => {
  if (!have) {
    if (process.env.CI) assert.fail('tsc is missing (Debian package node-typescript; scripts/setup.sh installs it)');
    t.skip('!!! tsc is missing: index.d.ts was NOT checked (run scripts/setup.sh)');
    return;
  }
  const ok = tsc('types-usage.ts');
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  const bad = tsc('types-misuse.ts');
  assert.notEqual(bad.status, 0, 'a call type of 3 type-checked');
  assert.match(bad.stdout, /not assignable to type 'CallType'/);
});
