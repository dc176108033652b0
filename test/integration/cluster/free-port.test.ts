/**
 * freeLoopbackPort: ports below the kernel's ephemeral range (no outgoing connection can take
 * them), never the same port twice to any caller on the machine within the claim time, and free.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { freeLoopbackPort } from '../../../src/cluster/free-port.ts';

const run = promisify(execFile);
const ephemeralLow = Number(
  readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0],
);

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

describe('freeLoopbackPort', () => {
  test('gives distinct free ports below the ephemeral range, also across processes', async () => {
    const other = run(
      process.execPath,
      [
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        `import { freeLoopbackPort } from ${JSON.stringify(join(import.meta.dirname, '../../../src/cluster/free-port.ts'))};
         const ports = []; for (let i = 0; i < 100; i++) ports.push(await freeLoopbackPort());
         console.log(JSON.stringify(ports));`,
      ],
      { timeout: 60_000 },
    );
    const mine: number[] = [];
    for (let i = 0; i < 100; i++) mine.push(await freeLoopbackPort());
    const theirs = JSON.parse((await other).stdout) as number[];
    const all = [...mine, ...theirs];
    assert.equal(new Set(all).size, all.length, 'no port handed out twice');
    for (const port of all) {
      assert.ok(port >= 10_000 && port < ephemeralLow, `${port} lies below the ephemeral range`);
    }
    for (const port of mine) assert.ok(await bindable(port), `${port} is free`);
  });
});
