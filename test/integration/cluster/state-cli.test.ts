/**
 * `cometkms state show|import|export` on a cluster config (ARCHITECTURE.md §5): real
 * `node bin/cometkms.js state …` processes against the sign state in a real etcd, and a running
 * 3-node cluster that must continue from an imported state, never below it.
 */
import assert from 'node:assert/strict';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Etcd3 } from 'etcd3';
import { parsePrivValidatorState } from '../../../src/cometbft/privval-files.ts';
import { type PrivvalMessage, SignedMsgType } from '../../../src/cometbft/types.ts';
import type { ValidatorSimulator } from '../../../src/simulator/simulator.ts';
import { decodeSignState, etcdKeys } from '../../../src/store/etcd.ts';
import { chainFiles } from '../../../src/store/file.ts';
import type { KmsCluster } from '../../helpers/kms-cluster.ts';
import { type KmsExit, runCli } from '../../helpers/kms-process.ts';
import { clusterWithSentry } from '../../helpers/sentry.ts';

const CHAIN = 'cluster-state-cli-1';
/** the prefix every node of the cluster uses (the config default) */
const PREFIX = '/cometkms/';
/** a prefix no node uses: a cluster whose state nobody created yet */
const FRESH_PREFIX = '/fresh-state/';
/** Attempts per request: "try again" replies while a node adopts the validator connection. */
const MAX_ATTEMPTS = 300;

type CliRun = KmsExit & { stdout: string; stderr: string };

interface ShownState {
  chain_id: string;
  height: string;
  round: number;
  step: number;
  sign_bytes: string;
  signature: string;
}

/** A priv_validator_state.json as CometBFT writes it. */
function pvState(height: number, round: number, step: number, signbytes?: string): string {
  return JSON.stringify({ height: String(height), round, step, ...(signbytes ? { signbytes } : {}) });
}

describe('cometkms state with [cluster]: the sign state in etcd', () => {
  let cluster: KmsCluster;
  let sim: ValidatorSimulator;
  let etcd: Etcd3;
  let dir: string;
  let files = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ckms-state-cli-'));
    ({ cluster, sim } = await clusterWithSentry({ chainId: CHAIN, seed: 5, keyFill: 23 }));
    etcd = new Etcd3({ hosts: cluster.etcd.endpoints });
  });

  after(async () => {
    await sim?.close();
    etcd?.close();
    await cluster?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Runs `cometkms state <args>` for the chain with `config`. */
  async function state(config: string, ...args: string[]): Promise<CliRun> {
    return await runCli(
      ['state', ...args, '--chain-id', CHAIN, '--config', config],
      cluster.nodes[0]!.home.env(),
    );
  }

  function ok(r: CliRun): CliRun {
    assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    return r;
  }

  async function show(config: string): Promise<ShownState> {
    return JSON.parse(ok(await state(config, 'show', '--json')).stdout) as ShownState;
  }

  async function importState(config: string, content: string, ...extra: string[]): Promise<CliRun> {
    const from = join(dir, `state-${++files}.json`);
    await writeFile(from, content);
    return await state(config, 'import', '--from', from, ...extra);
  }

  /** The state key in etcd, read directly. */
  async function inEtcd(prefix: string): Promise<[bigint, number, number] | undefined> {
    const raw = await etcd.get(etcdKeys.state(prefix, CHAIN).toString()).buffer();
    if (raw === null) return undefined;
    const s = decodeSignState(raw, 'test');
    return [s.height, s.round, s.step];
  }

  /** Sends a vote until a node answers it with a signature or a refusal (not "try again"). */
  async function vote(
    type: number,
    height: bigint,
  ): Promise<Extract<PrivvalMessage, { kind: 'signedVoteResponse' }>> {
    const v = sim.buildVote(type, height, 0, sim.blockIdFor(height, 0));
    for (let i = 0; i < MAX_ATTEMPTS; i++) {
      let reply: PrivvalMessage | undefined;
      try {
        reply = await sim.requestVote(v);
      } catch {
        // a dropped connection: the simulator adopts the next node
      }
      if (reply?.kind === 'signedVoteResponse') return reply;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no answer for height ${height} after ${MAX_ATTEMPTS} attempts`);
  }

  async function signed(type: number, height: bigint): Promise<void> {
    const reply = await vote(type, height);
    assert.equal(reply.error, undefined, `height ${height}: ${reply.error?.description}`);
    assert.ok(reply.vote.signature.length > 0);
  }

  it('show, import, export on a cluster nobody signed for yet; backwards refused; --force', async () => {
    const home = cluster.nodes[0]!.home;
    // The same node config with a prefix no node uses ([cluster] is the config's last table).
    const config = join(dir, 'fresh.toml');
    await writeFile(config, `${await readFile(home.configPath, 'utf8')}etcd_prefix = "${FRESH_PREFIX}"\n`);
    const key = etcdKeys.state(FRESH_PREFIX, CHAIN).toString();

    assert.equal(await inEtcd(FRESH_PREFIX), undefined);
    // A chain nobody created a state for has none: never an empty one.
    const missing = await state(config, 'show', '--json');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /has no sign state \(etcd key .*\)\. Create it with cometkms state init/);

    // The key does not exist: the import creates it.
    let r = ok(await importState(config, pvState(5, 1, 2, '0A0B')));
    assert.match(r.stdout, /set to height\/round\/step 5\/1\/2 \(was no state in etcd\)/);
    assert.deepEqual(await inEtcd(FRESH_PREFIX), [5n, 1, 2]);
    const shown = await show(config);
    assert.deepEqual([shown.height, shown.round, shown.step, shown.sign_bytes], ['5', 1, 2, '0a0b']);
    const human = ok(await state(config, 'show')).stdout;
    assert.ok(human.includes(`stored in:            etcd key ${key} (`), human);
    const out = join(dir, 'exported.json');
    const exportRun = ok(await state(config, 'export', '--out', out));
    const exported = parsePrivValidatorState(await readFile(out, 'utf8'));
    // No signature is recorded for the imported reservation: the export leaves its sign bytes
    // out (FilePV would panic on sign bytes without a signature) and says so.
    assert.deepEqual(
      [exported.height, exported.round, exported.step, Buffer.from(exported.signBytes).toString('hex')],
      [5n, 1, 2, ''],
    );
    assert.match(exportRun.stderr, /no signature is recorded for the reservation at 5\/1\/2/);

    // Backwards, and sideways with other bytes: refused, etcd untouched.
    r = await importState(config, pvState(5, 0, 3, '0A0B'));
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /refusing to import .*: it would move the height\/round\/step backwards \(stored 5\/1\/2/,
    );
    r = await importState(config, pvState(5, 1, 2, 'FFFF'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /it has the same height\/round\/step with different sign bytes/);
    assert.deepEqual(await inEtcd(FRESH_PREFIX), [5n, 1, 2]);
    // The same state again: nothing to move.
    r = ok(await importState(config, pvState(5, 1, 2, '0A0B')));
    assert.match(r.stdout, /already at height\/round\/step 5\/1\/2; nothing to move/);

    // --force replaces it, loudly.
    r = ok(await importState(config, pvState(3, 0, 1), '--force'));
    assert.match(r.stderr, /state import --force: the stored sign state is REPLACED/);
    assert.match(r.stdout, /FORCED to height\/round\/step 3\/0\/1 \(was 5\/1\/2\)/);
    assert.deepEqual(await inEtcd(FRESH_PREFIX), [3n, 0, 1]);

    // Nothing of this went to the home's file store.
    await assert.rejects(access(chainFiles(home.home, CHAIN).log), { code: 'ENOENT' });
  });

  it('a running cluster refuses heights below an imported state and signs above it', async () => {
    for (let h = 1n; h <= 3n; h++) {
      await signed(SignedMsgType.Prevote, h);
      await signed(SignedMsgType.Precommit, h);
    }
    // Any node's config reads the cluster's state.
    const shown = await show(cluster.nodes[1]!.home.configPath);
    assert.deepEqual([shown.height, shown.round, shown.step], ['3', 0, 3]);

    // Imported with the nodes running (from another node's config).
    const r = ok(await importState(cluster.nodes[2]!.home.configPath, pvState(50, 0, 3, 'AB')));
    assert.match(r.stdout, /set to height\/round\/step 50\/0\/3 \(was 3\/0\/3\)/);

    // The leader's cached state is 3/0/3: its reservation for height 4 fails the mod-revision
    // compare, re-reads 50/0/3, and the guard refuses.
    const refused = await vote(SignedMsgType.Prevote, 4n);
    assert.match(refused.error?.description ?? '', /height regression/);
    assert.equal(refused.vote.signature.length, 0);
    await signed(SignedMsgType.Prevote, 51n);
    assert.deepEqual(await inEtcd(PREFIX), [51n, 0, 2]);

    // The cluster's own progress counts as the stored state for the next import.
    const again = await importState(cluster.nodes[0]!.home.configPath, pvState(50, 0, 3, 'AB'));
    assert.equal(again.code, 1);
    assert.match(again.stderr, /backwards \(stored 51\/0\/2, file 50\/0\/3\)/);
    const summary = sim.summary();
    assert.equal(summary.doubleSigns, 0);
    assert.equal(summary.invalidSignatures, 0);
    assert.deepEqual(summary.problems, []);
  });
});
