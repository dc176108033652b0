/**
 * deploy/systemd: both units pass `systemd-analyze verify`, and the etcd unit's exact ExecStart
 * flags run a real etcd member (with certificates from make-certs.sh) that serves CometKMS's
 * etcd client over mutual TLS, refuses a client of another CA, and honours a 1 s lease TTL.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Etcd3 } from 'etcd3';
import { createEtcdClient } from '../../../src/cluster/etcd-client.ts';
import { freeLoopbackPort } from '../../../src/cluster/etcd-launcher.ts';

const DEPLOY = join(import.meta.dirname, '../../../deploy');
const UNITS = join(DEPLOY, 'systemd');
const ETCD = '/usr/bin/etcd';
const READY_WITHIN_MS = 20_000;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The arguments of a unit's ExecStart= (continuation lines joined; the units use no quoting). */
function execStart(unit: string): string[] {
  const line = unit
    .replace(/\\\n/g, ' ')
    .split('\n')
    .find((l) => l.startsWith('ExecStart='));
  assert.ok(line, 'no ExecStart= line');
  return line.slice('ExecStart='.length).trim().split(/\s+/);
}

let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-systemd-'));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('systemd units', () => {
  test('systemd-analyze verify accepts both units', async (t) => {
    const which = await run('sh', ['-c', 'command -v systemd-analyze']);
    if (which.code !== 0) {
      t.skip('systemd-analyze is not installed here: the units were not verified');
      return;
    }
    // verify checks that ExecStart's binary exists: point cometkms.service at one that does.
    const units = join(dir, 'units');
    await run('mkdir', ['-p', units]);
    const kms = await readFile(join(UNITS, 'cometkms.service'), 'utf8');
    assert.ok(kms.includes('ExecStart=/usr/local/bin/cometkms start --config /etc/cometkms/config.toml'));
    await writeFile(
      join(units, 'cometkms.service'),
      kms.replace('ExecStart=/usr/local/bin/cometkms ', `ExecStart=${process.execPath} `),
    );
    await copyFile(join(UNITS, 'etcd-cometkms.service'), join(units, 'etcd-cometkms.service'));
    const r = await run('systemd-analyze', [
      'verify',
      join(units, 'cometkms.service'),
      join(units, 'etcd-cometkms.service'),
    ]);
    assert.equal(r.code, 0, `systemd-analyze verify: ${r.stdout}${r.stderr}`);
    assert.doesNotMatch(`${r.stdout}${r.stderr}`, /cometkms/, 'no warnings about the units');
  });

  test('cometkms.service carries the hardening and stop behaviour of the brief', async () => {
    const unit = await readFile(join(UNITS, 'cometkms.service'), 'utf8');
    for (const line of [
      'User=cometkms',
      'ProtectSystem=strict',
      'ReadWritePaths=/var/lib/cometkms',
      'NoNewPrivileges=yes',
      'PrivateTmp=yes',
      'ProtectHome=yes',
      'CapabilityBoundingSet=',
      'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6',
      'LockPersonality=yes',
      // V8's JIT needs writable+executable memory
      'MemoryDenyWriteExecute=no',
      'KillSignal=SIGTERM',
      'Restart=on-failure',
    ]) {
      assert.ok(unit.split('\n').includes(line), `missing line: ${line}`);
    }
    assert.deepEqual(execStart(unit).slice(1), ['start', '--config', '/etc/cometkms/config.toml']);
  });
});

describe('etcd-cometkms.service flags on a real etcd member', () => {
  let etcd: ChildProcess | undefined;
  let clientPort: number;
  const certs = () => join(dir, 'certs');
  const clients: Etcd3[] = [];

  /** A CometKMS etcd client with the TLS files of node `id` under `base`. */
  async function client(base: string, id: string): Promise<Etcd3> {
    const [ca, cert, key] = await Promise.all(
      ['ca.pem', 'node.pem', 'node-key.pem'].map((f) => readFile(join(base, id, f))),
    );
    const c = createEtcdClient({
      endpoints: [`https://127.0.0.1:${clientPort}`],
      callTimeoutMs: 2000,
      tls: { ca: ca!, cert: cert!, key: key! },
    });
    clients.push(c);
    return c;
  }

  before(async () => {
    const makeCerts = join(DEPLOY, 'tls/make-certs.sh');
    for (const [out, name] of [
      [certs(), 'cluster CA'],
      [join(dir, 'other'), 'other CA'],
    ] as const) {
      const r = await run('bash', [makeCerts, '--out', out, '--ca-name', name, '--node', 'kms-1:127.0.0.1']);
      assert.equal(r.code, 0, r.stderr);
    }
    clientPort = await freeLoopbackPort();
    const peerPort = await freeLoopbackPort();
    // The unit's own flags; only the host-specific values are replaced for 127.0.0.1.
    const env: Record<string, string> = {
      KMS_ETCD_NAME: 'kms-1',
      KMS_ETCD_IP: '127.0.0.1',
      KMS_ETCD_INITIAL_CLUSTER: 'kms-1=https://127.0.0.1:2380',
      KMS_ETCD_INITIAL_CLUSTER_STATE: 'new',
      KMS_ETCD_CLUSTER_TOKEN: 'deploy-test',
    };
    const [bin, ...flags] = execStart(await readFile(join(UNITS, 'etcd-cometkms.service'), 'utf8'));
    assert.equal(bin, ETCD);
    const args = flags.map((f) => {
      let a = f
        .replace(/\$\{(\w+)\}/g, (_, k: string) => {
          assert.ok(env[k] !== undefined, `unit uses \${${k}}, unknown to the test`);
          return env[k]!;
        })
        .replace('%S/etcd-cometkms', join(dir, 'etcd-data'))
        .replaceAll('/etc/etcd-cometkms/tls/', `${join(certs(), 'kms-1')}/`)
        .replaceAll(':2379', `:${clientPort}`)
        .replaceAll(':2380', `:${peerPort}`);
      // The unit listens on the host IP and on 127.0.0.1; here both are 127.0.0.1.
      if (a.startsWith('--listen-client-urls=')) {
        a = `--listen-client-urls=${[...new Set(a.split('=')[1]!.split(','))].join(',')}`;
      }
      return a;
    });
    etcd = spawn(ETCD, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    etcd.stderr!.on('data', (d) => {
      log = (log + d).slice(-4000);
    });
    // Ready when a put over mutual TLS succeeds; bounded in time.
    const c = await client(certs(), 'kms-1');
    const deadline = Date.now() + READY_WITHIN_MS;
    for (;;) {
      assert.equal(etcd.exitCode, null, `etcd exited: ${log}`);
      try {
        await c.put('/deploy-test/ready').value('1');
        break;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`etcd not ready: ${(err as Error).message}\n${log}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });

  after(async () => {
    for (const c of clients) c.close();
    if (etcd?.pid !== undefined && etcd.exitCode === null && etcd.signalCode === null) {
      const exited = once(etcd, 'exit');
      process.kill(etcd.pid, 'SIGKILL');
      await exited;
    }
  });

  test('a CometKMS client with a node certificate reads and writes', async () => {
    const c = await client(certs(), 'kms-1');
    await c.put('/deploy-test/k').value('v');
    assert.equal(await c.get('/deploy-test/k').string(), 'v');
  });

  test('a client certificate of another CA is refused', async () => {
    // Trusts the cluster CA (so the server is accepted) but presents another CA's certificate.
    const [ca, cert, key] = await Promise.all([
      readFile(join(certs(), 'ca.pem')),
      readFile(join(dir, 'other/kms-1/node.pem')),
      readFile(join(dir, 'other/kms-1/node-key.pem')),
    ]);
    const c = createEtcdClient({
      endpoints: [`https://127.0.0.1:${clientPort}`],
      callTimeoutMs: 2000,
      tls: { ca, cert, key },
    });
    clients.push(c);
    await assert.rejects(c.get('/deploy-test/k').string());
  });

  test('the election timeout of the unit lets etcd grant a 1 s lease as asked', async () => {
    const c = await client(certs(), 'kms-1');
    const granted = await c.leaseClient.leaseGrant({ TTL: 1 });
    // With etcd's default 1000 ms election timeout this would come back as 2.
    assert.equal(Number(granted.TTL), 1);
  });
});
