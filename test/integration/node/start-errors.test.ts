/**
 * `cometkms start` refusing to run: each bad input ends the real process with the exit code of
 * its class (3 config, 4 HSM, 2 usage, 1 anything else) and one fatal JSON log line that says
 * what to fix (nothing on stderr), and no validator is ever dialed. One deliberate non-refusal: a
 * cluster node whose etcd does not answer runs on as a follower that signs nothing (start.ts).
 */
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Readiness } from '../../../src/admin/runtime-view.ts';
import type { NodeStatus } from '../../../src/admin/types.ts';
import { freeLoopbackPort } from '../../../src/cluster/free-port.ts';
import { SignedMsgType } from '../../../src/cometbft/types.ts';
import { ValidatorSimulator } from '../../../src/simulator/simulator.ts';
import { chainFiles, FileSignStateStore } from '../../../src/store/file.ts';
import type { SignState } from '../../../src/store/types.ts';
import { makeTestCerts } from '../../helpers/certs.ts';
import { startEtcdCluster } from '../../helpers/etcd-cluster.ts';
import { generateKeys, type KmsChain, KmsHome, killAllKms } from '../../helpers/kms-process.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.ts';

const CHAIN = 'err-chain-1';

/** GET over HTTPS trusting `ca` (fetch cannot take a CA): status and parsed JSON body. */
async function httpsGet(
  base: string,
  path: string,
  token: string,
  ca: Buffer,
): Promise<{ status: number; body: unknown }> {
  return await new Promise((resolve, reject) => {
    const req = httpsRequest(
      new URL(path, base),
      { ca, headers: { authorization: `Bearer ${token}` }, timeout: 5_000 },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (d: string) => {
          text += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer within 5 s`)));
    req.on('error', reject);
    req.end();
  });
}

describe('cometkms start: refusals', () => {
  let token: SoftHsmToken;
  let dir: string;
  /** a unix "validator" that only counts connection attempts */
  let listener: Server;
  let validatorAddr: string;
  let dials = 0;
  const homes: KmsHome[] = [];

  const chain = (over: Partial<KmsChain> = {}): KmsChain => ({
    id: CHAIN,
    keyLabel: 'val-ed',
    keyType: 'ed25519',
    protocol: 'v0.38',
    validators: [validatorAddr],
    ...over,
  });

  async function home(opts: Partial<Parameters<typeof KmsHome.create>[0]> = {}): Promise<KmsHome> {
    const h = await KmsHome.create({ token, chains: [chain()], ...opts });
    homes.push(h);
    return h;
  }

  /**
   * Starts a node that must fail with exit code `code`; returns the message of its fatal log
   * line after checking that nothing was dialed and that every output line is JSON.
   */
  async function refused(
    h: KmsHome,
    code: number,
    args: string[] = [],
    env: Record<string, string> = {},
  ): Promise<string> {
    const before = dials;
    const p = h.start({ args, env });
    assert.deepEqual(await p.waitExit(30_000), { code, signal: null }, p.lines.join('\n'));
    assert.equal(dials, before, 'no validator was dialed');
    assert.equal(p.stderr, '', 'nothing on stderr');
    assert.equal(p.logs().length, p.lines.filter((l) => l !== '').length, 'every stdout line is JSON');
    const fatal = p.logs().filter((r) => r['level'] === 60);
    assert.equal(fatal.length, 1, 'one fatal line');
    assert.equal(fatal[0]!['exitCode'], code);
    assert.equal(typeof fatal[0]!['version'], 'string');
    return String(fatal[0]!['msg']);
  }

  before(async () => {
    token = await createSoftHsmToken();
    dir = await mkdtemp(join(tmpdir(), 'ckms-err-'));
    const path = join(dir, 'validator.sock');
    listener = createServer((socket) => {
      dials++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => listener.listen(path, resolve));
    validatorAddr = `unix://${path}`;
    await generateKeys(token, [
      { label: 'val-ed', type: 'ed25519' },
      { label: 'val-k1', type: 'secp256k1' },
    ]);
  });

  after(async () => {
    await killAllKms();
    await new Promise<void>((resolve) => listener.close(() => resolve()));
    for (const h of homes) await h.cleanup();
    await rm(dir, { recursive: true, force: true });
    await token.cleanup();
  });

  it('an un-initialised home: says to run init', async () => {
    const h = await home({ initialise: false });
    const message = await refused(h, 3);
    assert.match(message, /is not initialised: run `cometkms init --home .*` first/);
  });

  it('an unknown config key: names it', async () => {
    const h = await home({ extraToml: 'colour = "blue"\n' });
    const message = await refused(h, 3);
    assert.match(message, /chain\[0\]\.validator\[0\]\.colour: unknown key/);
  });

  it('a missing key label: names the chain and the label', async () => {
    const h = await home({ chains: [chain({ keyLabel: 'no-such-key' })] });
    const message = await refused(h, 4);
    assert.match(message, new RegExp(`chain "${CHAIN}": key_label "no-such-key" \\(key_type ed25519\\)`));
    assert.match(message, /no public key labelled "no-such-key"/);
  });

  it('a key of the wrong type: names the chain, the label and both types', async () => {
    const h = await home({ chains: [chain({ keyLabel: 'val-k1', keyType: 'ed25519' })] });
    const message = await refused(h, 4);
    assert.match(message, new RegExp(`chain "${CHAIN}": key_label "val-k1"`));
    assert.match(message, /is secp256k1, not ed25519/);
  });

  it('a wrong PIN: the login error names the PIN source', async () => {
    const h = await home({ pin: 'not-the-pin' });
    const message = await refused(h, 4);
    assert.match(message, /cannot log in to token .* with the PIN from hsm\.pin_file .*CKR_PIN_INCORRECT/);
  });

  it('no PIN at all (no pin_file, no COMETKMS_HSM_PIN): says how to provide one', async () => {
    const h = await home({ pinSource: 'env' });
    const message = await refused(h, 4, [], { COMETKMS_HSM_PIN: '' });
    assert.match(message, /no HSM PIN: configure hsm\.pin_file .* or set COMETKMS_HSM_PIN/);
  });

  it('a corrupt state file: stops with the store message', async () => {
    const h = await home();
    await writeFile(chainFiles(h.home, CHAIN).log, '{"not": "a state log"', { mode: 0o600 });
    const message = await refused(h, 1);
    assert.match(message, /sign state .* \(chain "err-chain-1"\): unreadable/);
    assert.match(message, /cometkms state import/);
  });

  it('a state log older than its seal (restored backup): stops', async () => {
    const h = await home();
    const files = chainFiles(h.home, CHAIN);
    const store = await FileSignStateStore.open(h.home, { chainIds: [CHAIN] });
    const state = (height: bigint): SignState => ({
      height,
      round: 0,
      step: 2,
      signBytes: new Uint8Array([SignedMsgType.Prevote, Number(height)]),
      extensionSignBytes: new Uint8Array(),
      signature: new Uint8Array(),
    });
    const s1 = state(1n);
    assert.deepEqual(await store.reserve(CHAIN, (await store.load(CHAIN))!, s1), { ok: true });
    await copyFile(files.log, join(dir, 'backup.log'));
    assert.deepEqual(await store.reserve(CHAIN, s1, state(2n)), { ok: true });
    await store.close();
    await copyFile(join(dir, 'backup.log'), files.log);
    const message = await refused(h, 1);
    assert.match(message, /is older than its seal/);
  });

  it('a second process on the same home: refused while the first keeps running', async () => {
    // The running node dials too: give it an endpoint other than the counting listener.
    const h = await home({ chains: [chain({ validators: [`unix://${join(dir, 'nobody.sock')}`] })] });
    const first = h.start();
    await first.waitReady();
    const message = await refused(h, 1);
    assert.match(message, new RegExp(`is in use by another cometkms process \\(pid ${first.pid}\\)`));
    assert.equal(first.exitStatus, undefined, 'the first node still runs');
    first.kill('SIGTERM');
    assert.deepEqual(await first.waitExit(15_000), { code: 0, signal: null });
  });

  it('a failure after the HSM session is open (admin port taken): cleans up and exits 1', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const { port } = blocker.address() as AddressInfo;
    try {
      const h = await home();
      const message = await refused(h, 1, [], { COMETKMS_ADMIN_LISTEN: `127.0.0.1:${port}` });
      assert.match(message, /admin API cannot listen on admin.listen 127.0.0.1:\d+: .*EADDRINUSE/);
      // Everything was released on the way out: the home starts normally now.
      const p = h.start();
      await p.waitReady();
      p.kill('SIGTERM');
      assert.deepEqual(await p.waitExit(15_000), { code: 0, signal: null });
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });

  it('a [cluster] section without TLS files: the config names the key, forwarding needs it', async () => {
    const h = await home({
      extraToml:
        '\n[cluster]\netcd_endpoints = ["http://127.0.0.1:2379"]\n' +
        'forward_listen = "127.0.0.1:0"\nforward_advertise = "127.0.0.1:26790"\n',
    });
    const message = await refused(h, 3);
    assert.match(
      message,
      /cluster\.tls_ca_file: required: nodes forward requests to the leader over mutual TLS/,
    );
  });

  it('[cluster] with etcd unreachable: a follower that signs nothing and is not ready', async () => {
    const certs = await makeTestCerts('cometkms start-errors', ['kms-x']);
    const sim = new ValidatorSimulator({
      listen: `unix://${join(dir, 'cluster-validator.sock')}`,
      chainId: CHAIN,
      protocol: 'v0.38',
      blockTimeMs: 0,
      heights: 0,
      extensions: false,
    });
    try {
      const f = certs.files('kms-x');
      const str = JSON.stringify;
      const h = await home({
        nodeId: 'kms-x',
        chains: [chain({ validators: [await sim.listen()] })],
        extraToml:
          `\n[cluster]\netcd_endpoints = ["http://127.0.0.1:${await freeLoopbackPort()}"]\n` +
          'forward_listen = "127.0.0.1:0"\nforward_advertise = "127.0.0.1:26790"\n' +
          `tls_ca_file = ${str(f.caFile)}\ntls_cert_file = ${str(f.certFile)}\ntls_key_file = ${str(f.keyFile)}\n`,
      });
      // The admin API over TLS too (the node certificate is valid for 127.0.0.1).
      const config = await readFile(h.configPath, 'utf8');
      await writeFile(
        h.configPath,
        config.replace(
          '[admin]\n',
          `[admin]\ntls_cert_file = ${str(f.certFile)}\ntls_key_file = ${str(f.keyFile)}\n`,
        ),
      );
      const p = h.start();
      const admin = await p.waitReady();
      assert.match(admin, /^https:\/\/127\.0\.0\.1:\d+$/);
      assert.ok(p.logs().some((r) => String(r['msg']).startsWith('etcd does not answer')));
      const ca = await readFile(f.caFile);
      const status = (await httpsGet(admin, '/status', h.adminToken, ca)).body as NodeStatus;
      assert.equal(status.mode, 'cluster');
      assert.equal(status.node_id, 'kms-x');
      assert.equal(status.role, 'follower');
      assert.equal(status.leader_id, null);
      assert.equal(status.hsm.signing_session, false, 'a follower holds no signing session');
      assert.equal(status.cluster?.etcd_healthy, false);
      const ready = await httpsGet(admin, '/readyz', h.adminToken, ca);
      assert.equal(ready.status, 503);
      assert.equal((ready.body as Readiness).checks['etcd_healthy'], false);
      // Connected and answering: the public key locally, a vote with "try again" (empty).
      assert.ok(await sim.waitForSigner(15_000), 'the node dialed its validator');
      await sim.requestPubKey();
      const vote = sim.buildVote(SignedMsgType.Prevote, 1n, 0, sim.blockIdFor(1n, 0));
      assert.equal((await sim.requestVote(vote)).kind, 'empty');
      // A flood can only be seen over time: let the retry loops run for a few seconds. Each
      // failure is logged when it starts, not on every retry (it was ~40 lines a second).
      await new Promise((r) => setTimeout(r, 3_000));
      const count = (prefix: string) => p.logs().filter((r) => String(r['msg']).startsWith(prefix)).length;
      assert.equal(count('cluster view: member registration failed'), 1);
      assert.equal(count('leadership step failed'), 1);
      p.kill('SIGTERM');
      assert.deepEqual(await p.waitExit(15_000), { code: 0, signal: null }, p.stderr);
    } finally {
      await sim.close();
      await certs.cleanup();
    }
  });

  it('[cluster] whose etcd freezes while the node leads: SIGTERM still exits 0, cleanly', async () => {
    const etcd = await startEtcdCluster({ members: 1, unsafeNoFsync: true });
    const certs = await makeTestCerts('cometkms start-errors frozen', ['kms-f']);
    try {
      const f = certs.files('kms-f');
      const str = JSON.stringify;
      const h = await home({
        nodeId: 'kms-f',
        chains: [chain({ validators: [`unix://${join(dir, 'nobody-frozen.sock')}`] })],
        extraToml:
          `\n[cluster]\netcd_endpoints = ${str(etcd.endpoints)}\n` +
          'forward_listen = "127.0.0.1:0"\nforward_advertise = "127.0.0.1:26790"\n' +
          `tls_ca_file = ${str(f.caFile)}\ntls_cert_file = ${str(f.certFile)}\ntls_key_file = ${str(f.keyFile)}\n`,
      });
      const p = h.start();
      await p.waitReady();
      await p.waitForLog((r) => r['msg'] === 'leader: serving', 15_000);
      // Frozen, not gone: connections stay open and calls hang until their deadlines, the case
      // where waiting on etcd held a shutdown longest.
      etcd.pause(0);
      p.kill('SIGTERM');
      assert.deepEqual(await p.waitExit(30_000), { code: 0, signal: null }, p.stderr);
      const logs = p.logs();
      assert.ok(
        logs.some((r) => /^shutdown: .*: etcd did not answer within \d+ ms; going on/.test(String(r['msg']))),
        'the etcd steps were abandoned at their deadline',
      );
      assert.ok(
        !logs.some((r) => /^shutdown: .* failed$/.test(String(r['msg']))),
        'every local step succeeded',
      );
      assert.equal(logs.find((r) => r['msg'] === 'stopped')?.['clean'], true);
    } finally {
      etcd.resume(0);
      await etcd.stop();
      await certs.cleanup();
    }
  });

  it('the test-only crash hook cannot be armed without NODE_ENV=test and its probability', async () => {
    const h = await home();
    let message = await refused(h, 2, ['--test-crash-after-reserve'], {
      COMETKMS_TEST_CRASH_AFTER_RESERVE: '1',
    });
    assert.match(message, /test-only fault hook: it needs NODE_ENV=test/);
    message = await refused(h, 2, ['--test-crash-after-reserve'], { NODE_ENV: 'test' });
    assert.match(message, /needs COMETKMS_TEST_CRASH_AFTER_RESERVE set to a probability in \(0, 1\]/);
  });

  it('the crash variable without the hidden flag is ignored (and warned about)', async () => {
    const h = await home();
    const p = h.start({ env: { NODE_ENV: 'test', COMETKMS_TEST_CRASH_AFTER_RESERVE: '1' } });
    await p.waitReady();
    assert.ok(p.logs().some((r) => String(r['msg']).includes('is set but ignored')));
    assert.ok(!p.logs().some((r) => String(r['msg']).includes('fault hook is armed')));
    p.kill('SIGTERM');
    assert.deepEqual(await p.waitExit(15_000), { code: 0, signal: null });
  });
});
