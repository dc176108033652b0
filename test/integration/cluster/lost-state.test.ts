/**
 * A lost or older etcd state never restarts a chain, on a real 3-node cluster (ARCHITECTURE §2
 * invariant 7). Each case used to double-sign: the store re-created a missing state key as the
 * initial state, and nothing caught an etcd that went backwards.
 * - every key deleted (a wiped store, an empty snapshot, a wrong prefix);
 * - only the state key deleted, after a failover;
 * - a restore from an older snapshot (etcdctl snapshot save at H, sign on to H+20, restore);
 * - the same restore, led by a node that was down while the lost heights were signed (its own
 *   mark is old: it learns the newest HRS from a majority's marks, peer marks);
 * - a node started with a wrong etcd_prefix.
 * In each, nothing at or below what was signed is signed again over other bytes; signing resumes
 * only after the operator's documented recovery (state import at or above the high-water mark).
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Etcd3 } from 'etcd3';
import { type PrivvalMessage, SignedMsgType, type Vote } from '../../../src/cometbft/types.ts';
import type { ValidatorSimulator } from '../../../src/simulator/simulator.ts';
import { blockId } from '../../helpers/guard-fixtures.ts';
import { type KmsCluster, startKmsCluster, waitFor } from '../../helpers/kms-cluster.ts';
import { runCli } from '../../helpers/kms-process.ts';
import { manualSentry } from '../../helpers/sentry.ts';

const CHAIN = 'lost-etcd-1';
const PREFIX = '/cometkms/';

describe('cluster: a lost or older etcd state never restarts a chain', () => {
  let cluster: KmsCluster;
  let etcd: Etcd3;
  let sim: ValidatorSimulator;
  let wrongSim: ValidatorSimulator;

  before(async () => {
    sim = manualSentry(CHAIN, 11);
    wrongSim = manualSentry(CHAIN, 12);
    const addr = await sim.listen();
    await wrongSim.listen();
    cluster = await startKmsCluster({
      chainId: CHAIN,
      protocol: 'v0.38',
      validators: [addr],
      keySeed: new Uint8Array(32).fill(9),
    });
    etcd = new Etcd3({ hosts: cluster.etcd.endpoints });
    assert.ok(await sim.waitForSigner(30_000));
    await sim.requestPubKey();
    await cluster.leaderIndex();
  });

  after(async () => {
    await sim?.close();
    await wrongSim?.close();
    etcd?.close();
    await cluster?.cleanup();
  });

  const signed = (m: PrivvalMessage): boolean =>
    m.kind === 'signedVoteResponse' && m.error === undefined && m.vote.signature.length > 0;
  const prevote = (s: ValidatorSimulator, height: bigint, block: number): Vote =>
    s.buildVote(SignedMsgType.Prevote, height, 0, blockId(block));

  /** Sends `vote` until it is signed (bounded). */
  async function sign(s: ValidatorSimulator, vote: Vote): Promise<void> {
    let last: PrivvalMessage | undefined;
    await waitFor(`a signature at ${vote.height}`, 20_000, async () => {
      last = await s.requestVote(vote).catch(() => undefined);
      return last !== undefined && signed(last);
    });
  }

  /** Sends each vote over and over for `ms`: none may ever be signed. */
  async function neverSigned(s: ValidatorSimulator, votes: Vote[], ms: number): Promise<number> {
    let answers = 0;
    const until = Date.now() + ms;
    while (Date.now() < until) {
      for (const v of votes) {
        const reply = await s.requestVote(v).catch(() => undefined);
        if (reply === undefined) continue;
        answers++;
        assert.ok(!signed(reply), `signed ${v.height}/${v.round} after the state was lost`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return answers;
  }

  /** Waits until every running node reports at least `height` for the chain (followers remember too). */
  async function replicatedEverywhere(height: number): Promise<void> {
    await waitFor(`every node at ${height}`, 15_000, async () => {
      for (let i = 0; i < cluster.nodes.length; i++) {
        const s = await cluster.status(i);
        if (s === undefined || (s.chains[0]?.height ?? 0) < height) return false;
      }
      return true;
    });
  }

  /** The leader's state alarm code, once it has one. */
  async function alarmCode(): Promise<string> {
    let code = '';
    await waitFor('a state alarm on the leader', 15_000, async () => {
      for (let i = 0; i < cluster.nodes.length; i++) {
        const s = await cluster.status(i);
        const alarm = s?.role === 'leader' ? s.chains[0]?.state_alarm : undefined;
        if (alarm) code = alarm.code;
      }
      return code !== '';
    });
    return code;
  }

  /** The operator's recovery: import the last signed state (HRS only, no sign bytes). */
  async function importState(height: number, step: number): Promise<void> {
    const node = cluster.nodes[0]!;
    const file = join(node.home.dir, `pvs-${height}.json`);
    await writeFile(file, JSON.stringify({ height: String(height), round: 0, step }));
    const r = await runCli(
      ['state', 'import', '--config', node.home.configPath, '--chain', CHAIN, '--from', file],
      node.home.env(),
    );
    assert.equal(r.code, 0, r.stderr);
  }

  it('every key deleted: nothing is signed until the operator imports the last state', async () => {
    await sign(sim, prevote(sim, 100n, 1));
    await replicatedEverywhere(100);
    await etcd.delete().prefix(PREFIX);
    assert.ok((await neverSigned(sim, [prevote(sim, 100n, 2), prevote(sim, 101n, 2)], 4_000)) > 0);
    assert.equal(await alarmCode(), 'state_regression');
    await importState(100, 2);
    await sign(sim, prevote(sim, 101n, 2));
    await neverSigned(sim, [prevote(sim, 100n, 2)], 500);
  });

  it('only the state key deleted, after a failover: nothing is signed at or above it', async () => {
    await sign(sim, prevote(sim, 110n, 1));
    await replicatedEverywhere(110);
    const leader = await cluster.leaderIndex();
    await cluster.signal(leader, 'SIGKILL');
    await etcd.delete().key(`${PREFIX}state/${CHAIN}`);
    await cluster.leaderIndex(20_000);
    assert.ok((await neverSigned(sim, [prevote(sim, 110n, 2), prevote(sim, 111n, 2)], 4_000)) > 0);
    await cluster.start(leader);
    await importState(110, 2);
    await sign(sim, prevote(sim, 111n, 1));
  });

  it('a restore from an older etcd snapshot: nothing up to the last signed height is signed again', async () => {
    await sign(sim, prevote(sim, 120n, 1));
    const snapshot = join(cluster.nodes[0]!.home.dir, 'etcd.snapshot');
    await cluster.etcd.snapshot(snapshot);
    for (let h = 121n; h <= 140n; h++) await sign(sim, prevote(sim, h, 1));
    await replicatedEverywhere(140);
    for (let i = 0; i < cluster.nodes.length; i++) await cluster.signal(i, 'SIGKILL');
    etcd.close();
    await cluster.etcd.restore(snapshot);
    etcd = new Etcd3({ hosts: cluster.etcd.endpoints });
    await Promise.all(cluster.nodes.map((_, i) => cluster.start(i)));
    await cluster.leaderIndex(20_000);
    const replays = [121n, 130n, 140n].map((h) => prevote(sim, h, 3));
    assert.ok((await neverSigned(sim, replays, 4_000)) > 0);
    assert.equal(await alarmCode(), 'state_regression');
    await importState(140, 2);
    await sign(sim, prevote(sim, 141n, 1));
    await neverSigned(sim, replays, 500);
  });

  it('a restore led by a node that missed the last heights: nothing up to them is signed again', async () => {
    await sign(sim, prevote(sim, 160n, 1));
    await replicatedEverywhere(160);
    const snapshot = join(cluster.nodes[0]!.home.dir, 'etcd-160.snapshot');
    await cluster.etcd.snapshot(snapshot);
    // C, a follower, goes down: its own high-water mark stays at 160.
    const c = ((await cluster.leaderIndex()) + 1) % cluster.nodes.length;
    await cluster.signal(c, 'SIGKILL');
    for (let h = 161n; h <= 180n; h++) await sign(sim, prevote(sim, h, 1));
    for (let i = 0; i < cluster.nodes.length; i++) if (i !== c) await cluster.signal(i, 'SIGKILL');
    etcd.close();
    await cluster.etcd.restore(snapshot);
    etcd = new Etcd3({ hosts: cluster.etcd.endpoints });
    // C alone: it wins the election but cannot collect a majority's marks, so it does not serve.
    await cluster.start(c);
    await waitFor('the node that missed the last heights to lead', 20_000, async () => {
      const s = await cluster.status(c);
      return s?.role === 'leader';
    });
    const replays = [161n, 170n, 180n].map((h) => prevote(sim, h, 3));
    assert.ok((await neverSigned(sim, replays, 3_000)) > 0);
    // The others come back as followers: C collects their marks (at 180) before it serves.
    await Promise.all(cluster.nodes.map((_, i) => (i === c ? Promise.resolve() : cluster.start(i))));
    assert.ok((await neverSigned(sim, replays, 4_000)) > 0);
    assert.equal((await cluster.status(c))?.role, 'leader', 'C still leads');
    assert.equal(await alarmCode(), 'state_regression');
    await importState(180, 2);
    await sign(sim, prevote(sim, 181n, 1));
    await neverSigned(sim, replays, 500);
  });

  it('a node started with a wrong etcd_prefix signs nothing', async () => {
    const i = 2;
    const node = cluster.nodes[i]!;
    await cluster.signal(i, 'SIGTERM');
    const original = await readFile(node.home.configPath, 'utf8');
    const addr = await wrongSim.listen();
    const wrong = original
      .replace('[cluster]\n', '[cluster]\netcd_prefix = "/wrong-prefix/"\n')
      .replace(/addr = "tcp:\/\/127\.0\.0\.1:\d+"/, `addr = ${JSON.stringify(addr)}`);
    await writeFile(node.home.configPath, wrong);
    try {
      await cluster.start(i);
      assert.ok(await wrongSim.waitForSigner(30_000), 'the wrong-prefix node dialed its validator');
      await waitFor('the wrong-prefix node to lead its own prefix', 15_000, async () => {
        const s = await cluster.status(i);
        return s?.role === 'leader';
      });
      const votes = [prevote(wrongSim, 150n, 1), prevote(wrongSim, 141n, 2)];
      assert.ok((await neverSigned(wrongSim, votes, 3_000)) > 0);
      // Why it does not sign: alone under its prefix, no majority answers for the peers' marks.
      await node.proc?.waitForLog(
        (l) => String(l['msg']).includes('no majority of the cluster answered'),
        10_000,
      );
    } finally {
      await cluster.signal(i, 'SIGTERM');
      await writeFile(node.home.configPath, original);
      await cluster.start(i);
    }
  });
});
