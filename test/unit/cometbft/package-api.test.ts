import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../..', import.meta.url));

// The library API is consumed as `cometkms/cometbft` by other packages: resolve it through the
// package's own "exports" map (self-reference), exactly as a dependent would, and use it.
test('cometkms/cometbft resolves through package exports and computes vote sign bytes', () => {
  const script = join(root, 'test', `.api-probe-${process.pid}.ts`);
  writeFileSync(
    script,
    [
      "import * as api from 'cometkms/cometbft';",
      'const vote = { ...api.zeroVote(), type: 1, height: 1n, round: 0 };',
      "const sb = api.voteSignBytes('test', vote);",
      "const body = api.encodeMessage({ kind: 'pingRequest' }, 'v0.38');",
      "console.log(JSON.stringify({ sb: Buffer.from(sb).toString('hex'), ping: Buffer.from(body).toString('hex'), kinds: Object.keys(api).length }));",
    ].join('\n'),
  );
  try {
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--conditions', 'source', script], {
      cwd: root,
      encoding: 'utf8',
    });
    const parsed = JSON.parse(out) as { sb: string; ping: string; kinds: number };
    assert.equal(parsed.ping, '3a00');
    assert.ok(parsed.sb.startsWith('1e08011101000000000000002a0b088092b8c398feffffff013204'), parsed.sb);
    assert.ok(parsed.kinds > 30);
  } finally {
    rmSync(script, { force: true });
  }
});
