/**
 * Concurrent signing across leader changes, with real processes (ARCHITECTURE.md §2, §4): a
 * 3-member etcd cluster and 3 `cometkms start` nodes whose tokens hold the same key, dialing two
 * simulated sentries of one validator that sign new heights continuously. A seeded schedule
 * SIGKILLs and restarts the leader, SIGSTOPs/SIGCONTs it, transfers leadership through the admin
 * API, kills the etcd member on the leader's host, and kills the etcd Raft leader.
 *
 * After every fault: signing goes on, and every node's /status reaches the leader's HRS. At the
 * end: every node reports the same HRS, the sentries' shared record holds no double sign and no
 * invalid signature, and the audit logs of all nodes show no HRS signed over two sign bytes.
 *
 * CHAOS_SEED=<n> replays a schedule.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Rng } from '../../src/simulator/rng.ts';
import { SignRecord } from '../../src/simulator/sign-record.ts';
import { ValidatorSimulator } from '../../src/simulator/simulator.ts';
import {
  assertAuditClean,
  assertSameHrs,
  clusterHeight,
  transferLeadership,
  waitAgreement,
  waitProgress,
} from '../helpers/cluster-checks.ts';
import { type KmsCluster, startKmsCluster } from '../helpers/kms-cluster.ts';

const CHAIN = 'cluster-chaos-1';
const SEED = Number(process.env['CHAOS_SEED'] ?? 20_261_127);
const FAULTS = [
  'kill-leader',
  'pause-leader',
  'transfer',
  'kill-etcd-of-leader',
  'kill-etcd-raft-leader',
] as const;
/** Every fault kind runs this many times (in a seeded order). */
const ROUNDS = 2;

describe('cluster: signing through leader changes', () => {
  let cluster: KmsCluster | undefined;
  const sims: ValidatorSimulator[] = [];

  after(async () => {
    await Promise.all(sims.map((s) => s.close()));
    await cluster?.cleanup();
  });

  it(`no double sign, and every node agrees, across ${FAULTS.length * ROUNDS} faults (seed ${SEED})`, {
    timeout: 240_000,
  }, async () => {
    const rng = new Rng(SEED);
    const record = new SignRecord();
    for (let i = 0; i < 2; i++) {
      sims.push(
        new ValidatorSimulator({
          listen: 'tcp://127.0.0.1:0',
          chainId: CHAIN,
          protocol: 'v0.38',
          blockTimeMs: 30,
          heights: 1_000_000,
          proposerEvery: 2,
          nilVoteRate: 0.1,
          roundChangeRate: 0.05,
          retryRate: 0.1,
          seed: SEED + i,
          connectTimeoutMs: 60_000,
          record,
        }),
      );
    }
    const validators = await Promise.all(sims.map((s) => s.listen()));
    cluster = await startKmsCluster({
      chainId: CHAIN,
      protocol: 'v0.38',
      validators,
      keySeed: new Uint8Array(32).fill(SEED % 251),
    });
    const c = cluster;
    const runs = sims.map((s) => s.run());
    await waitProgress(c, 0, 5, 30_000);

    const schedule = FAULTS.flatMap((f) => Array.from({ length: ROUNDS }, () => f));
    for (let i = schedule.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [schedule[i], schedule[j]] = [schedule[j]!, schedule[i]!];
    }
    const log: string[] = [];
    for (const fault of schedule) {
      const leader = await c.leaderIndex(20_000);
      const before = await clusterHeight(c);
      log.push(`${fault} (leader ${c.nodes[leader]!.id}, height ${before})`);
      switch (fault) {
        case 'kill-leader':
          await c.signal(leader, 'SIGKILL');
          await waitProgress(c, before, 3, 30_000);
          await c.start(leader);
          break;
        case 'pause-leader':
          c.pause(leader);
          // longer than the 1 s lease: another node must take over while this one is frozen
          await waitProgress(c, before, 3, 30_000);
          c.resume(leader);
          break;
        case 'transfer': {
          const to = rng.int(2) === 0 ? undefined : c.nodes[(leader + 1) % c.nodes.length]!.id;
          const res = await transferLeadership(c, leader, to);
          assert.equal(res.status, 200, `transfer: ${JSON.stringify(res.body)}`);
          assert.equal(res.body.transferred, true);
          break;
        }
        case 'kill-etcd-of-leader':
          await c.etcd.kill(leader);
          await waitProgress(c, before, 3, 30_000);
          await c.etcd.restart(leader);
          break;
        case 'kill-etcd-raft-leader': {
          const raft = await c.etcd.raftLeaderIndex();
          await c.etcd.kill(raft);
          await waitProgress(c, before, 3, 30_000);
          await c.etcd.restart(raft);
          break;
        }
      }
      await waitProgress(c, await clusterHeight(c), 3, 30_000);
      await waitAgreement(c, 10_000);
    }

    await Promise.all(sims.map((s) => s.close()));
    const summaries = (await Promise.allSettled(runs)).map((r, i) =>
      r.status === 'fulfilled' ? r.value : sims[i]!.summary(),
    );
    const detail = JSON.stringify({ seed: SEED, log, summaries }, null, 1);
    await assertSameHrs(c);
    assert.deepEqual(record.doubleSigns, [], detail);
    for (const s of summaries) {
      assert.equal(s.doubleSigns, 0, detail);
      assert.equal(s.invalidSignatures, 0, detail);
    }
    assert.ok(summaries.reduce((n, s) => n + s.signed, 0) > 100, detail);
    await assertAuditClean(c);
  });
});
