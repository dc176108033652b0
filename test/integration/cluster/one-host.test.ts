/**
 * README "Three nodes on one host", step by step with real processes: a SoftHSM token and a key
 * made with `cometkms softhsm init` / `keys generate`, certificates from make-certs.sh, three etcd
 * members over mutual TLS, three homes from `cometkms init --cluster`, `config check` on each, the
 * chain's state created once with `state init`, three `cometkms start`, `cometkms simulate` as the
 * validator, and `cometkms status`. Ports are random instead of the README's fixed ones; the
 * commands and flags are the README's (the first test checks that the README still shows them).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { freeLoopbackPort } from '../../../src/cluster/free-port.ts';
import { SOFTHSM_MODULE } from '../../../src/pkcs11/softhsm.ts';
import { KmsProcess, killAllKms, runCli } from '../../helpers/kms-process.ts';
import { startTlsEtcd, type TlsEtcd } from '../../helpers/tls-etcd.ts';

const run = promisify(execFile);
const REPO = join(import.meta.dirname, '../../..');
const NODES = ['kms-1', 'kms-2', 'kms-3'];

describe('README: three nodes on one host', () => {
  let dir: string;
  let etcd: TlsEtcd | undefined;
  const nodes: KmsProcess[] = [];
  /** the environment of every command: SoftHSM's config, nothing from this process's COMETKMS_* */
  let env: NodeJS.ProcessEnv;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cometkms-one-host-'));
    env = { PATH: process.env['PATH'] ?? '', HOME: dir, SOFTHSM2_CONF: join(dir, 'hsm', 'softhsm2.conf') };
  });

  after(async () => {
    await killAllKms();
    await etcd?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  /** Runs `cometkms ...args`; it must exit 0. */
  async function ok(...args: string[]): Promise<string> {
    const r = await runCli(args, env, 60_000);
    assert.equal(r.code, 0, `cometkms ${args.join(' ')}: ${r.stdout}\n${r.stderr}`);
    return r.stdout;
  }

  test('the README shows the commands this test runs', async () => {
    const readme = await readFile(join(REPO, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('### Three nodes on one host'));
    for (const shown of [
      'cometkms softhsm init --dir $D/hsm --label cometkms',
      'cometkms keys generate --module /usr/lib/softhsm/libsofthsm2.so --token-label cometkms',
      'deploy/tls/make-certs.sh --out $D/tls',
      '--client-cert-auth --trusted-ca-file $t/ca.pem --cert-file $t/node.pem --key-file $t/node-key.pem',
      'cometkms init --home $D/kms-$i --node-id kms-$i',
      '--token-label cometkms --pin-file $D/hsm/user.pin --admin-listen 127.0.0.1:2678$i',
      '--cluster --etcd-endpoints https://127.0.0.1:23791,https://127.0.0.1:23792,https://127.0.0.1:23793',
      '--forward-listen 127.0.0.1:2679$i --forward-advertise 127.0.0.1:2679$i --tls-dir $D/tls/kms-$i',
      'cometkms config check --config $D/kms-$i/config.toml',
      'cometkms state init --config $D/kms-1/config.toml --chain test-chain',
      'cometkms start --config $D/kms-$i/config.toml',
      'cometkms simulate --listen tcp://127.0.0.1:26659 --chain-id test-chain',
      'cometkms status --config $D/kms-2/config.toml',
    ]) {
      assert.ok(section.includes(shown), `README shows: ${shown}`);
    }
  });

  test('token, key, certificates, etcd, homes, state, nodes, a validator that signs, status', async () => {
    // 1. token and key
    await ok('softhsm', 'init', '--dir', join(dir, 'hsm'), '--label', 'cometkms');
    await ok(
      ...['keys', 'generate', '--module', SOFTHSM_MODULE, '--token-label', 'cometkms'],
      ...['--pin-file', join(dir, 'hsm', 'user.pin'), '--label', 'validator', '--type', 'ed25519'],
    );
    // 2. certificates
    await run(
      'bash',
      [
        join(REPO, 'deploy/tls/make-certs.sh'),
        ...['--out', join(dir, 'tls'), '--ca-name', 'cometkms one host'],
        ...NODES.flatMap((n) => ['--node', `${n}:127.0.0.1`]),
      ],
      { timeout: 60_000 },
    );
    const tls = (n: string) => ({
      caFile: join(dir, 'tls', n, 'ca.pem'),
      certFile: join(dir, 'tls', n, 'node.pem'),
      keyFile: join(dir, 'tls', n, 'node-key.pem'),
    });
    // 3. etcd over mutual TLS, one member per node certificate
    etcd = await startTlsEtcd(NODES.map(tls));
    // 4. homes
    const validatorPort = await freeLoopbackPort();
    const config = (n: string) => join(dir, n, 'config.toml');
    for (const n of NODES) {
      const forward = `127.0.0.1:${await freeLoopbackPort()}`;
      await ok(
        ...['init', '--home', join(dir, n), '--node-id', n],
        ...[
          '--chain-id',
          'test-chain',
          '--key-label',
          'validator',
          '--validator',
          `tcp://127.0.0.1:${validatorPort}`,
        ],
        ...['--token-label', 'cometkms', '--pin-file', join(dir, 'hsm', 'user.pin')],
        ...['--admin-listen', `127.0.0.1:${await freeLoopbackPort()}`],
        ...['--cluster', '--etcd-endpoints', etcd.endpoints.join(',')],
        ...['--forward-listen', forward, '--forward-advertise', forward, '--tls-dir', join(dir, 'tls', n)],
      );
      assert.match(await ok('config', 'check', '--config', config(n)), /^config ok: /m);
    }
    // 5. the chain's state, once
    await ok('state', 'init', '--config', config('kms-1'), '--chain', 'test-chain');
    // 6. nodes and the validator
    for (const n of NODES) nodes.push(KmsProcess.spawn(['start', '--config', config(n)], env));
    for (const p of nodes) await p.waitReady(60_000);
    const sim = await runCli(
      [
        ...['simulate', '--listen', `tcp://127.0.0.1:${validatorPort}`, '--chain-id', 'test-chain'],
        ...['--heights', '10', '--block-time', '200ms', '--seed', '7'],
      ],
      env,
      120_000,
    );
    assert.equal(sim.code, 0, `${sim.stdout}\n${sim.stderr}`);
    // 7. status, from a node that may not be the leader
    const status = await ok('status', '--config', config('kms-2'), '--json');
    const s = JSON.parse(status) as {
      leader_id: string | null;
      chains: Array<{ chain_id: string; height: number }>;
    };
    assert.ok(NODES.includes(s.leader_id ?? ''), `a leader: ${status}`);
    assert.equal(s.chains[0]?.chain_id, 'test-chain');
    assert.ok((s.chains[0]?.height ?? 0) >= 10, `the chain got to height 10: ${status}`);

    for (const p of nodes) p.kill('SIGTERM');
    for (const p of nodes) assert.deepEqual(await p.waitExit(20_000), { code: 0, signal: null }, p.stderr);
  });
});
