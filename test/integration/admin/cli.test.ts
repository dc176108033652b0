/**
 * `cometkms status` and `cometkms leader transfer` run as real processes against a real admin
 * server (fake runtime): --admin and --config, the table and --json, and the operator-facing
 * errors for a wrong token, a missing token and an unreachable node.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { AdminServer } from '../../../src/admin/server.ts';
import { freeLoopbackPort } from '../../../src/cluster/free-port.ts';
import { VERSION } from '../../../src/version.ts';
import { freshCli } from '../../helpers/dist.ts';
import { FakeRuntime, startTestAdminServer } from '../../unit/admin/fake-runtime.ts';

const REPO = join(import.meta.dirname, '../../..');
const BIN = freshCli();
const TOKEN = 'cli-test-token';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cometkms(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: REPO, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

function ok(r: Run): Run {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

let dir: string;
let server: AdminServer;
let runtime: FakeRuntime;
let url: string;
let tokenFile: string;
let wrongTokenFile: string;
let configFile: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-admin-cli-'));
  runtime = new FakeRuntime();
  server = await startTestAdminServer(runtime, TOKEN);
  url = `http://${server.address}`;
  tokenFile = join(dir, 'admin.token');
  await writeFile(tokenFile, `${TOKEN}\n`);
  await chmod(tokenFile, 0o600);
  wrongTokenFile = join(dir, 'wrong.token');
  await writeFile(wrongTokenFile, 'not-the-token\n');
  await chmod(wrongTokenFile, 0o600);
  configFile = join(dir, 'config.toml');
  await writeFile(
    configFile,
    [
      '[node]',
      'id = "kms-1"',
      `home = "${dir}"`,
      '[hsm]',
      'module = "/usr/lib/softhsm/libsofthsm2.so"',
      'token_label = "t"',
      '[admin]',
      `listen = "0.0.0.0:${server.address.split(':')[1]}"`,
      'token_file = "admin.token"',
      '[[chain]]',
      'id = "chain-a"',
      'key_label = "k"',
      'key_type = "ed25519"',
      'protocol = "v0.38"',
      '[[chain.validator]]',
      'addr = "tcp://127.0.0.1:26659"',
      '',
    ].join('\n'),
  );
});
after(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

describe('cometkms status', () => {
  test('--admin + --token-file prints the table', async () => {
    const r = ok(await cometkms('status', '--admin', url, '--token-file', tokenFile));
    assert.match(r.stdout, /^node: +kms-1$/m);
    assert.match(r.stdout, new RegExp(`^version: +${VERSION.replaceAll('.', '\\.')}$`, 'm'));
    assert.match(r.stdout, /^role: +leader$/m);
    assert.match(r.stdout, /^leader: +kms-1$/m);
    assert.match(r.stdout, /^term: +42$/m);
    assert.match(r.stdout, /^CHAIN +HEIGHT\/ROUND\/STEP +LAST SIGNED +REFUSED +ERRORS +VALIDATORS UP$/m);
    assert.match(r.stdout, /^chain-a +100\/0\/3 +2025-01-01T00:00:00\.000Z +3 \(1 double-sign\) +2 +1\/2$/m);
    assert.match(r.stdout, /^chain-b +7\/1\/2 +never +0 +0 +1\/1$/m);
  });

  test('--config takes admin.listen (0.0.0.0 → loopback) and admin.token_file; --json is the raw /status', async () => {
    runtime.current = { ...runtime.current, role: 'follower', leader_id: 'kms-2' };
    try {
      const r = ok(await cometkms('status', '--config', configFile, '--json'));
      assert.deepEqual(JSON.parse(r.stdout), runtime.current);
    } finally {
      runtime.current = new FakeRuntime().current;
    }
  });

  test('a wrong token, no token, and an unreachable node are clear errors', async () => {
    let r = await cometkms('status', '--admin', url, '--token-file', wrongTokenFile);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /refused the token from --token-file .*wrong\.token \(401 unauthorized\)/);
    r = await cometkms('status', '--admin', url);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /requires a token: pass --token-file FILE or --config with admin\.token_file/);
    const port = await freeLoopbackPort();
    r = await cometkms('status', '--admin', `http://127.0.0.1:${port}`, '--token-file', tokenFile);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach the admin API at http:\/\/127\.0\.0\.1:\d+: connection refused/);
  });
});

describe('cometkms leader transfer', () => {
  test('--to reaches the runtime and the answer is printed', async () => {
    runtime.transfers.length = 0;
    runtime.transferAnswer = { transferred: true, message: 'leadership handed to kms-3' };
    const r = ok(await cometkms('leader', 'transfer', '--to', 'kms-3', '--config', configFile));
    assert.equal(r.stdout, 'leadership handed to kms-3\n');
    assert.deepEqual(runtime.transfers, ['kms-3']);
  });

  test('without --to, any member; a refusal is exit 1 with the reason', async () => {
    runtime.transfers.length = 0;
    runtime.transferAnswer = { transferred: false, message: 'this node is not the leader (kms-2 is)' };
    const r = await cometkms('leader', 'transfer', '--admin', url, '--token-file', tokenFile);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /leadership not transferred: this node is not the leader \(kms-2 is\)/);
    assert.deepEqual(runtime.transfers, [undefined]);
  });

  test('a wrong token never reaches the runtime', async () => {
    runtime.transfers.length = 0;
    const r = await cometkms('leader', 'transfer', '--admin', url, '--token-file', wrongTokenFile);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /401 unauthorized/);
    assert.deepEqual(runtime.transfers, []);
  });
});
