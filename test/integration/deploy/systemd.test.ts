/**
 * deploy/systemd: both units (and the cluster drop-in) pass `systemd-analyze verify`; the etcd
 * unit's exact ExecStart flags run a real etcd member (with certificates from make-certs.sh) that
 * serves CometKMS's etcd client over mutual TLS, refuses a client of another CA, and honours a
 * 1 s lease TTL; and cometkms.service's credentials work: a real node started with the unit's
 * ExecStart on a credentials directory laid out as systemd lays it out (every LoadCredential=,
 * mode 0400) reads its config and every secret from there.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, copyFile, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Etcd3 } from 'etcd3';
import { createEtcdClient } from '../../../src/cluster/etcd-client.ts';
import { freeLoopbackPort } from '../../../src/cluster/free-port.ts';
import { parseConfig } from '../../../src/config/load.ts';
import { adminGet, generateKeys, KmsHome, KmsProcess } from '../../helpers/kms-process.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.ts';

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

/** Every `LoadCredential=ID:PATH` of a unit file, as [ID, PATH]. */
function credentials(unit: string): Array<[string, string]> {
  return unit
    .split('\n')
    .filter((l) => l.startsWith('LoadCredential='))
    .map((l) => {
      const [id, path] = l.slice('LoadCredential='.length).split(':');
      assert.ok(id && path, l);
      return [id, path];
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
    assert.ok(kms.includes('ExecStart=/usr/local/bin/cometkms start --config %d/config.toml'));
    await writeFile(
      join(units, 'cometkms.service'),
      kms.replace('ExecStart=/usr/local/bin/cometkms ', `ExecStart=${process.execPath} `),
    );
    await copyFile(join(UNITS, 'etcd-cometkms.service'), join(units, 'etcd-cometkms.service'));
    // The cluster drop-in next to it: verify reads it as part of the unit.
    await cp(join(UNITS, 'cometkms.service.d'), join(units, 'cometkms.service.d'), { recursive: true });
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
      'StateDirectory=cometkms',
      'StateDirectoryMode=0700',
      'ConfigurationDirectory=cometkms',
      'ProtectProc=invisible',
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
    // The config comes from the credentials directory (%d), so that its relative secret paths
    // resolve there; nothing else is writable than the state directory.
    assert.deepEqual(execStart(unit).slice(1), ['start', '--config', '%d/config.toml']);
    assert.doesNotMatch(unit, /^ReadWritePaths=/m);
  });

  test("etcd-cometkms.service stops Debian's etcd.service, which takes 127.0.0.1:2379 too", async () => {
    const unit = await readFile(join(UNITS, 'etcd-cometkms.service'), 'utf8');
    assert.ok(unit.split('\n').includes('Conflicts=etcd.service'));
    const listen = execStart(unit).find((a) => a.startsWith('--listen-client-urls='));
    assert.match(listen ?? '', /https:\/\/127\.0\.0\.1:2379/);
  });
});

describe('cometkms.service credentials', () => {
  let token: SoftHsmToken;
  let home: KmsHome;

  before(async () => {
    token = await createSoftHsmToken();
    await generateKeys(token, [{ label: 'cosmoshub-validator', type: 'ed25519' }]);
  });
  after(async () => {
    await home?.cleanup();
    await token?.cleanup();
  });

  test('every secret of the example configs resolves to a credential of the unit', async () => {
    const creds = '/run/credentials/cometkms.service';
    const single = credentials(await readFile(join(UNITS, 'cometkms.service'), 'utf8'));
    const cluster = [
      ...single,
      ...credentials(await readFile(join(UNITS, 'cometkms.service.d/cluster.conf'), 'utf8')),
    ];
    for (const [file, ids] of [
      ['single-node.toml', single],
      ['kms-1.toml', cluster],
    ] as const) {
      const text = await readFile(join(DEPLOY, 'config', file), 'utf8');
      const byId = new Map(ids);
      assert.equal(byId.get('config.toml'), '/etc/cometkms/config.toml', 'the config is a credential');
      // Read from the credentials directory (the service) and from /etc/cometkms (an operator).
      for (const [dirName, expected] of [
        [creds, (id: string) => join(creds, id)],
        ['/etc/cometkms', (id: string) => byId.get(id)],
      ] as const) {
        const c = parseConfig(text, join(dirName, 'config.toml'), {});
        const secrets = [c.hsm.pin_file, c.admin.token_file, c.cluster?.tls_key_file].filter(
          (p) => p !== undefined,
        );
        assert.equal(secrets.length, c.cluster ? 3 : 2);
        for (const path of secrets) {
          const id = path.slice(path.lastIndexOf('/') + 1);
          assert.ok(byId.has(id), `${file}: ${path} is no LoadCredential= of the unit`);
          assert.equal(path, expected(id), `${file}: ${path}`);
        }
        // The CA and certificate are public: read in place, not credentials.
        for (const pub of [c.cluster?.tls_ca_file, c.cluster?.tls_cert_file]) {
          if (pub !== undefined) assert.match(pub, /^\/etc\/cometkms\/tls\//);
        }
      }
    }
  });

  test('a real node runs from a credentials directory laid out as systemd does', {
    timeout: 60_000,
  }, async () => {
    const unit = await readFile(join(UNITS, 'cometkms.service'), 'utf8');
    home = await KmsHome.create({ token, chains: [] });
    // deploy/config/single-node.toml with only the host-specific values changed: its secret
    // paths stay as shipped.
    const example = await readFile(join(DEPLOY, 'config/single-node.toml'), 'utf8');
    // Validator endpoints where nothing listens: the node keeps dialing them.
    const ports = [await freeLoopbackPort(), await freeLoopbackPort()];
    const config = example
      .replace('home = "/var/lib/cometkms"', `home = ${JSON.stringify(home.home)}`)
      .replace(/^module = .*$/m, `module = ${JSON.stringify(token.modulePath)}`)
      .replace('profile = "yubihsm2"', 'profile = "softhsm2"')
      .replace('token_label = "cometkms"', `token_label = ${JSON.stringify(token.label)}`)
      .replace('listen = "127.0.0.1:26780"', 'listen = "127.0.0.1:0"')
      .replace(/^addr = .*$/gm, () => `addr = "tcp://127.0.0.1:${ports.shift()}"`);
    assert.match(config, /^pin_file = "hsm\.pin"$/m);
    assert.match(config, /^token_file = "admin\.token"$/m);
    // The sources the unit names, here in a stand-in for /etc/cometkms.
    const etc = join(dir, 'etc-cometkms');
    await mkdir(etc, { recursive: true });
    const sources = new Map([
      ['/etc/cometkms/config.toml', config],
      ['/etc/cometkms/hsm.pin', `${token.pin}\n`],
      ['/etc/cometkms/admin.token', `${home.adminToken}\n`],
    ]);
    // What systemd makes of LoadCredential=: one file per ID, mode 0400, in a 0500 directory.
    const credsDir = join(dir, 'credentials');
    await mkdir(credsDir, { recursive: true });
    for (const [id, path] of credentials(unit)) {
      const content = sources.get(path);
      assert.ok(content !== undefined, `LoadCredential=${id}:${path} has no source in this test`);
      await writeFile(join(credsDir, id), content, { mode: 0o400 });
    }
    await chmod(credsDir, 0o500);
    // The operator's one-time step for a new validator, with the same config.
    const init = KmsProcess.spawn(
      ['state', 'init', '--config', join(credsDir, 'config.toml'), '--chain', 'cosmoshub-4'],
      home.env(),
    );
    assert.equal((await init.waitExit(30_000)).code, 0, init.stderr);
    const args = execStart(unit)
      .slice(1)
      .map((a) => a.replace('%d', credsDir));
    const kms = KmsProcess.spawn(args, home.env({ CREDENTIALS_DIRECTORY: credsDir }));
    try {
      const adminUrl = await kms.waitReady();
      const { status, body } = await adminGet(adminUrl, '/status', home.adminToken);
      assert.equal(status, 200, JSON.stringify(body));
      assert.equal((body as { node_id: string }).node_id, 'kms-single');
    } finally {
      kms.kill('SIGTERM');
      await kms.waitExit(15_000);
      await chmod(credsDir, 0o700);
    }
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
