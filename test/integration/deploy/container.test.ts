/**
 * The two scripts the container image runs, tested outside a container (there is no Docker
 * engine here): the health probe against a real HTTP server, and the entry point against the
 * real CLI with a temporary home.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

const REPO = join(import.meta.dirname, '../../..');
const PROBE = join(REPO, 'deploy/container/probe.mjs');
const ENTRYPOINT = join(REPO, 'deploy/container/entrypoint.sh');
const TOKEN = 'probe-test-token';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 30_000, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-container-'));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('probe.mjs', () => {
  let server: Server;
  let listen: string;
  const probe = (...args: string[]) =>
    run(process.execPath, [PROBE, ...args], { COMETKMS_ADMIN_LISTEN: listen });

  before(async () => {
    // Like the admin API: /healthz public, /readyz behind the bearer token, /broken failing.
    server = createServer((req, res) => {
      if (req.url === '/healthz') res.writeHead(200).end('ok');
      else if (req.url === '/broken') res.writeHead(503).end();
      else if (req.headers.authorization !== `Bearer ${TOKEN}`) res.writeHead(401).end();
      else res.writeHead(200).end('ready');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    listen = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    await writeFile(join(dir, 'admin.token'), `${TOKEN}\n`, { mode: 0o600 });
  });

  after(() => {
    server.close();
  });

  test('a public route answering 2xx passes', async () => {
    assert.equal((await probe('/healthz')).code, 0);
  });

  test('a token route passes with --token-file and fails without it', async () => {
    assert.equal((await probe('/readyz', '--token-file', join(dir, 'admin.token'))).code, 0);
    const r = await probe('/readyz');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /HTTP 401/);
  });

  test('a non-2xx answer, a dead port and bad usage fail', async () => {
    assert.match((await probe('/broken')).stderr, /HTTP 503/);
    const port = Number(listen.split(':')[1]);
    const dead = await run(process.execPath, [PROBE, '/healthz'], {
      COMETKMS_ADMIN_LISTEN: `127.0.0.1:${port === 1 ? 2 : 1}`,
    });
    assert.equal(dead.code, 1);
    const usage = await probe('healthz');
    assert.equal(usage.code, 1);
    assert.match(usage.stderr, /usage/);
  });

  test('a wildcard listen address is probed on 127.0.0.1', async () => {
    const port = listen.split(':')[1];
    const r = await run(process.execPath, [PROBE, '/healthz'], { COMETKMS_ADMIN_LISTEN: `0.0.0.0:${port}` });
    assert.equal(r.code, 0, r.stderr);
  });
});

describe('entrypoint.sh', () => {
  test('initialises the home once, then runs cometkms with the given arguments', async () => {
    const home = join(dir, 'home');
    const env = { COMETKMS_APP: REPO, COMETKMS_HOME: home, COMETKMS_NODE_ID: 'kms-7' };
    const first = await run('sh', [ENTRYPOINT, '--help'], env);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /Usage: cometkms/);
    const config = await readFile(join(home, 'config.toml'), 'utf8');
    assert.match(config, /^id = "kms-7"$/m);
    const files = (await readdir(home)).sort();
    // A second start must not re-initialise (init refuses to overwrite; the script must not try).
    const second = await run('sh', [ENTRYPOINT, '--help'], { ...env, COMETKMS_NODE_ID: 'other' });
    assert.equal(second.code, 0, second.stderr);
    assert.equal(await readFile(join(home, 'config.toml'), 'utf8'), config);
    assert.deepEqual((await readdir(home)).sort(), files);
  });
});
