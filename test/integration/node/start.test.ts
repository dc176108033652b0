/**
 * `cometkms start` as a real process on a SoftHSM token, dialing simulated validators over tcp
 * (SecretConnection) and unix sockets for all four protocol versions; `/status` checked against
 * what the simulators and the state files say; graceful and forced shutdown.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freeLoopbackPort } from '../../../src/cluster/free-port.ts';
import { toHex } from '../../../src/cometbft/keys.ts';
import { PROTOCOL_VERSIONS, type PubKey } from '../../../src/cometbft/types.ts';
import { ValidatorSimulator } from '../../../src/simulator/simulator.ts';
import { readChainState, STATE_DIR } from '../../../src/store/file.ts';
import { legacyChainFiles } from '../../../src/store/legacy-files.ts';
import {
  encodeHwmFile,
  encodeStateFile,
  type StoredState,
  stateChecksum,
} from '../../../src/store/state-codec.ts';
import {
  adminGet,
  generateKeys,
  type KmsChain,
  KmsHome,
  killAllKms,
  nodeStatus,
  runCli,
} from '../../helpers/kms-process.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.ts';

const HEIGHTS = 10;

describe('cometkms start (single node)', () => {
  let token: SoftHsmToken;
  let sockDir: string;
  const homes: KmsHome[] = [];
  const sims: ValidatorSimulator[] = [];
  let keys: Map<string, PubKey>;

  /** one chain per protocol and transport; v0.37 with secp256k1 keys, the others ed25519 */
  const chainSpecs = PROTOCOL_VERSIONS.flatMap((protocol) =>
    (['tcp', 'unix'] as const).map((transport) => ({
      id: `chain-${protocol}-${transport}`,
      keyLabel: `key-${protocol}-${transport}`,
      keyType: protocol === 'v0.37' ? ('secp256k1' as const) : ('ed25519' as const),
      protocol,
      transport,
    })),
  );

  before(async () => {
    token = await createSoftHsmToken();
    sockDir = await mkdtemp(join(tmpdir(), 'ckms-sock-'));
    keys = await generateKeys(
      token,
      chainSpecs.map((c) => ({ label: c.keyLabel, type: c.keyType })),
    );
  });

  after(async () => {
    await killAllKms();
    await Promise.all(sims.map((s) => s.close()));
    for (const h of homes) await h.cleanup();
    await rm(sockDir, { recursive: true, force: true });
    await token.cleanup();
  });

  it('signs for every protocol over tcp and unix, and /status matches the simulators and the disk', async () => {
    const chains: KmsChain[] = [];
    const simByChain = new Map<string, ValidatorSimulator>();
    for (const c of chainSpecs) {
      const sim = new ValidatorSimulator({
        listen: c.transport === 'tcp' ? 'tcp://127.0.0.1:0' : `unix://${join(sockDir, `${c.id}.sock`)}`,
        chainId: c.id,
        protocol: c.protocol,
        blockTimeMs: 0,
        heights: HEIGHTS,
        proposerEvery: 1,
        nilVoteRate: 0,
        roundChangeRate: 0,
        retryRate: 0,
        seed: 11,
        connectTimeoutMs: 30_000,
      });
      sims.push(sim);
      simByChain.set(c.id, sim);
      chains.push({ ...c, validators: [await sim.listen()] });
    }
    // One more endpoint where nothing listens: /status must report it as not connected.
    const deadAddr = `tcp://127.0.0.1:${await freeLoopbackPort()}`;
    chains[0]!.validators.push(deadAddr);
    // The PIN comes from COMETKMS_HSM_PIN here; the other tests use hsm.pin_file.
    const home = await KmsHome.create({ token, chains, nodeId: 'kms-a', pinSource: 'env' });
    homes.push(home);
    const kms = home.start();
    const adminUrl = await kms.waitReady();

    const summaries = await Promise.all([...simByChain.values()].map((s) => s.run()));
    for (const [i, s] of summaries.entries()) {
      const spec = chainSpecs[i]!;
      assert.equal(s.heightsCompleted, HEIGHTS, spec.id);
      assert.equal(s.signed, HEIGHTS * 3, `${spec.id}: a proposal, a prevote and a precommit per height`);
      assert.equal(s.refused, 0, spec.id);
      assert.equal(s.emptyReplies, 0, spec.id);
      assert.equal(s.invalidSignatures, 0, spec.id);
      assert.equal(s.doubleSigns, 0, spec.id);
      assert.deepEqual(s.problems, [], spec.id);
      assert.equal(s.pubKey, toHex(keys.get(spec.keyLabel)!.bytes), `${spec.id}: the HSM key is served`);
    }

    const status = await nodeStatus(adminUrl, home.adminToken);
    assert.equal(status.node_id, 'kms-a');
    assert.equal(status.mode, 'single');
    assert.equal(status.role, 'leader');
    assert.equal(status.leader_id, 'kms-a');
    assert.equal(status.term, 0);
    assert.equal(status.hsm.token_label, token.label);
    assert.equal(status.hsm.signing_session, true);
    assert.equal(status.hsm.reachable, true);
    assert.deepEqual(
      status.chains.map((c) => c.chain_id),
      chainSpecs.map((c) => c.id),
    );
    for (const c of status.chains) {
      const spec = chainSpecs.find((s) => s.id === c.chain_id)!;
      const onDisk = await readChainState(home.home, c.chain_id);
      assert.ok(onDisk !== undefined);
      assert.deepEqual(
        { height: c.height, round: c.round, step: c.step },
        { height: HEIGHTS, round: 0, step: 3 },
        c.chain_id,
      );
      assert.deepEqual(
        { height: onDisk.height, round: onDisk.round, step: onDisk.step },
        { height: BigInt(HEIGHTS), round: 0, step: 3 },
      );
      assert.equal(c.key_type, spec.keyType);
      assert.equal(c.protocol, spec.protocol);
      assert.equal(typeof c.last_signed_at, 'string');
      const sim = simByChain.get(c.chain_id)!;
      assert.equal(c.validators[0]?.addr, sim.address);
      assert.equal(c.validators[0]?.connected, true);
      assert.equal(c.validators[0]?.connects, 1);
      assert.equal(c.validators[0]?.remote_node_id !== undefined, spec.transport === 'tcp');
    }
    assert.deepEqual(status.chains[0]?.validators[1], { addr: deadAddr, connected: false, connects: 0 });

    assert.equal((await adminGet(adminUrl, '/healthz')).status, 200, '/healthz needs no token');
    assert.equal((await adminGet(adminUrl, '/status')).status, 401, '/status needs the token');
    assert.equal((await adminGet(adminUrl, '/status', 'wrong')).status, 401);
    const ready = await adminGet(adminUrl, '/readyz', home.adminToken);
    assert.equal(ready.status, 200, JSON.stringify(ready.body));
    const transfer = await fetch(new URL('/leader/transfer', adminUrl), {
      method: 'POST',
      headers: { authorization: `Bearer ${home.adminToken}`, 'content-type': 'application/json' },
      body: '{}',
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(transfer.status, 409);
    assert.deepEqual(await transfer.json(), {
      transferred: false,
      message: 'single-node mode has no other node',
    });

    // Once a validator goes away, /status says so.
    const first = simByChain.get(chainSpecs[0]!.id)!;
    await first.close();
    const deadline = Date.now() + 10_000;
    for (;;) {
      const s = await nodeStatus(adminUrl, home.adminToken);
      if (s.chains[0]?.validators[0]?.connected === false) break;
      assert.ok(Date.now() < deadline, 'the closed validator is reported disconnected');
      await new Promise((r) => setTimeout(r, 50));
    }

    kms.kill('SIGTERM');
    assert.deepEqual(await kms.waitExit(15_000), { code: 0, signal: null });
    assert.ok(kms.logs().some((r) => r['msg'] === 'stopped' && r['clean'] === true));

    // The lock was released: the same home starts again, at the state it stopped at.
    const again = home.start();
    const url2 = await again.waitReady();
    const s2 = await nodeStatus(url2, home.adminToken);
    assert.deepEqual(
      s2.chains.map((c) => [c.height, c.round, c.step]),
      chainSpecs.map(() => [HEIGHTS, 0, 3]),
    );
    again.kill('SIGINT');
    assert.deepEqual(await again.waitExit(15_000), { code: 0, signal: null });
  });

  it('a home of the 0.1 layout: state show reads it, start moves it into a log and signs on from it', async () => {
    const spec = chainSpecs.find((c) => c.protocol === 'v0.38' && c.transport === 'unix')!;
    const sock = join(sockDir, 'upgrade.sock');
    const sim = new ValidatorSimulator({
      listen: `unix://${sock}`,
      chainId: spec.id,
      protocol: spec.protocol,
      blockTimeMs: 0,
      heights: 3,
      startHeight: 21n,
      proposerEvery: 1,
      nilVoteRate: 0,
      roundChangeRate: 0,
      retryRate: 0,
      seed: 5,
      connectTimeoutMs: 30_000,
    });
    sims.push(sim);
    await sim.listen();
    const home = await KmsHome.create({
      token,
      chains: [{ ...spec, validators: [`unix://${sock}`] }],
      stateHeight: null,
    });
    homes.push(home);
    // What 0.1 left: height 20 precommitted, at generation 7, with its high-water record.
    const old: StoredState = {
      chainId: spec.id,
      generation: 7n,
      state: {
        height: 20n,
        round: 0,
        step: 3,
        signBytes: new Uint8Array(),
        extensionSignBytes: new Uint8Array(),
        signature: new Uint8Array(),
      },
    };
    const legacy = legacyChainFiles(home.home, spec.id);
    await writeFile(legacy.state, encodeStateFile(old), { mode: 0o600 });
    const { chainId, generation } = old;
    const { height, round, step } = old.state;
    const hwm = { chainId, generation, height, round, step, stateChecksum: stateChecksum(old) };
    await writeFile(legacy.hwm, encodeHwmFile(hwm), { mode: 0o600 });

    const show = await runCli(
      ['state', 'show', '--config', home.configPath, '--chain', spec.id, '--json'],
      home.env(),
    );
    assert.equal(show.code, 0, show.stderr);
    assert.deepEqual(
      ((r) => [r.height, r.round, r.step])(JSON.parse(show.stdout)),
      ['20', 0, 3],
      'state show reads a 0.1 home without migrating it',
    );
    const stateDir = join(home.home, STATE_DIR);
    const names = async (): Promise<string[]> =>
      (await readdir(stateDir)).filter((n) => !n.startsWith('.') && n !== 'cometkms.lock').sort();
    assert.deepEqual(
      (await names()).map((n) => n.split('.').at(-1)),
      ['hwm', 'json'],
    );

    const kms = home.start();
    await kms.waitReady();
    const summary = await sim.run();
    assert.equal(summary.signed, 9, 'heights 21-23 signed from the migrated state');
    assert.equal(summary.refused + summary.emptyReplies + summary.invalidSignatures, 0);
    kms.kill('SIGTERM');
    assert.deepEqual(await kms.waitExit(15_000), { code: 0, signal: null });
    assert.deepEqual(
      (await names()).map((n) => n.split('.').at(-1)),
      ['log', 'seal'],
      'the 0.1 files are gone, the log and its seal hold the state',
    );
    const now = await readChainState(home.home, spec.id);
    assert.deepEqual([now?.height, now?.round, now?.step], [23n, 0, 3]);
  });

  it('a second signal during shutdown forces exit code 1', async () => {
    const spec = chainSpecs[2]!;
    const home = await KmsHome.create({
      token,
      chains: [{ ...spec, validators: [`unix://${join(sockDir, 'nobody.sock')}`] }],
    });
    homes.push(home);
    const kms = home.start();
    await kms.waitReady();
    // Two different signals: two pending SIGTERMs could merge into one delivery.
    kms.kill('SIGINT');
    kms.kill('SIGTERM');
    assert.deepEqual(await kms.waitExit(15_000), { code: 1, signal: null });
    assert.ok(kms.logs().some((r) => String(r['msg']).startsWith('second signal during shutdown')));
  });
});
