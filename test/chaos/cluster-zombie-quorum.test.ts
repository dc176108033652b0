/**
 * Two cluster faults where "when unsure, do not sign" (ARCHITECTURE.md §2, invariants 4 and 6)
 * is all that stands between the cluster and a double sign, with real processes:
 *
 * - Zombie leader: the leader is frozen (SIGSTOP) past its lease, another node wins and signs
 *   higher, then the old one is thawed. Whatever it still believes, its fencing token is dead:
 *   it steps down and reserves nothing more (its audit log, the sentries' record and its /status
 *   say so). The one thing it may still finish is the signature it was making when frozen: its
 *   reservation committed before the freeze, so those exact bytes at that HRS are the replicated
 *   state the new leader moved on from (invariant 2), and signing them is not a double sign.
 * - Quorum loss: 2 of 3 etcd members are killed. No reservation can commit, so no signature is
 *   produced; once they are back, signing resumes.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Etcd3 } from 'etcd3';
import { SignRecord } from '../../src/simulator/sign-record.ts';
import { ValidatorSimulator } from '../../src/simulator/simulator.ts';
import { decodeSignState, etcdKeys } from '../../src/store/etcd.ts';
import { assertAuditClean, clusterHeight, waitAgreement, waitProgress } from '../helpers/cluster-checks.ts';
import { type KmsCluster, startKmsCluster, waitFor } from '../helpers/kms-cluster.ts';

const CHAIN = 'cluster-chaos-2';
const SEED = Number(process.env['CHAOS_SEED'] ?? 20_261_128);
const PREFIX = '/cometkms/';

/** The fields of an audit record this test reads. */
interface AuditLine {
  ts?: string;
  outcome?: string;
  height?: string;
  round?: number;
  step?: number;
  sign_bytes_sha256?: string;
}

describe('cluster: zombie leader and quorum loss', () => {
  let cluster: KmsCluster;
  let etcd: Etcd3;
  const record = new SignRecord();
  const sims: ValidatorSimulator[] = [];
  let runs: Promise<unknown>[] = [];

  before(async () => {
    for (let i = 0; i < 2; i++) {
      sims.push(
        new ValidatorSimulator({
          listen: 'tcp://127.0.0.1:0',
          chainId: CHAIN,
          protocol: 'v0.38',
          blockTimeMs: 30,
          heights: 1_000_000,
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
      keySeed: new Uint8Array(32).fill(9),
    });
    etcd = new Etcd3({ hosts: cluster.etcd.endpoints });
    runs = sims.map((s) => s.run().catch(() => undefined));
    await waitProgress(cluster, 0, 5, 30_000);
  });

  after(async () => {
    await Promise.all(sims.map((s) => s.close()));
    await Promise.allSettled(runs);
    try {
      assert.deepEqual(record.doubleSigns, []);
      for (const s of sims) {
        assert.equal(s.summary().doubleSigns, 0);
        assert.equal(s.summary().invalidSignatures, 0);
      }
    } finally {
      etcd?.close();
      await cluster?.cleanup();
    }
  });

  it('a thawed zombie leader is fenced, steps down and signs nothing', { timeout: 120_000 }, async () => {
    // The zombie's last reservation: read right after the freeze, in one request with the leader
    // key, which proves nobody else could have written since (every write is fenced on that
    // key). On a loaded machine the read can come after the frozen leader's lease expired and
    // another node took over: then what was read proves nothing, so the zombie is thawed, the
    // cluster settles, and the freeze is tried again (bounded).
    let zombie = -1;
    let before = 0;
    let stateKv: { value: Buffer } | undefined;
    for (let attempt = 1; stateKv === undefined; attempt++) {
      zombie = await cluster.leaderIndex();
      before = await clusterHeight(cluster);
      cluster.pause(zombie);
      const frozen = await etcd.getAll().prefix(PREFIX).exec();
      const leaderKv = frozen.kvs.find((kv) => kv.key.toString() === etcdKeys.leader(PREFIX).toString());
      const holder = (JSON.parse(leaderKv?.value.toString() ?? '{}') as { nodeId?: string }).nodeId;
      if (holder === cluster.nodes[zombie]!.id) {
        stateKv = frozen.kvs.find((kv) => kv.key.toString() === etcdKeys.state(PREFIX, CHAIN).toString());
        assert.ok(stateKv !== undefined, 'the sign state exists');
        break;
      }
      assert.ok(attempt < 3, `the frozen leader's lease expired before the read, ${attempt} times`);
      cluster.resume(zombie);
      await waitProgress(cluster, before, 3, 30_000);
    }
    const lastReserved = decodeSignState(stateKv.value, 'state');
    // Another node takes over (lease 1 s) and signs higher while the zombie is frozen.
    await waitProgress(cluster, before, 5, 30_000);
    const resumedAt = Date.now();
    cluster.resume(zombie);
    await waitFor('the zombie to report itself a follower', 15_000, async () => {
      const s = await cluster.status(zombie);
      return s?.role === 'follower' && !s.hsm.signing_session && s.leader_id !== cluster.nodes[zombie]!.id;
    });
    await waitProgress(cluster, await clusterHeight(cluster), 3, 30_000);
    await waitAgreement(cluster, 10_000);
    // A graceful stop flushes its audit log; nothing it decided after the thaw may be a signature.
    await cluster.signal(zombie, 'SIGTERM');
    try {
      const lines = (await readFile(join(cluster.nodes[zombie]!.home.home, 'audit', 'audit.jsonl'), 'utf8'))
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => JSON.parse(l) as AuditLine);
      const thawed = (r: AuditLine): boolean => r.ts !== undefined && Date.parse(r.ts) >= resumedAt;
      const key = (r: AuditLine): string => `${r.height}/${r.round}/${r.step}/${r.sign_bytes_sha256}`;
      const reservedKey = key({
        height: lastReserved.height.toString(),
        round: lastReserved.round,
        step: lastReserved.step,
        sign_bytes_sha256: createHash('sha256').update(lastReserved.signBytes).digest('hex'),
      });
      // New signatures after the thaw: at most the one in progress at the freeze, over exactly
      // its last reserved bytes.
      const signedAfter = lines.filter((r) => thawed(r) && r.outcome === 'signed');
      assert.ok(
        signedAfter.length <= 1,
        `the zombie signed after it was thawed: ${JSON.stringify(signedAfter)}`,
      );
      for (const r of signedAfter) {
        assert.equal(key(r), reservedKey, 'the zombie signed something other than its last reservation');
      }
      // A sentry asking again for what the zombie had already signed (the same bytes at the same
      // HRS, before it learnt it lost the lead) gets that signature again: not a new decision.
      // Anything else repeated must be its last reservation.
      const signedBefore = new Set(lines.filter((r) => !thawed(r) && r.outcome === 'signed').map(key));
      const repeatedAfter = lines.filter(
        (r) => thawed(r) && (r.outcome === 'resigned' || r.outcome === 'timestamp_only'),
      );
      for (const r of repeatedAfter) {
        assert.ok(
          signedBefore.has(key(r)) || key(r) === reservedKey,
          `the zombie answered with a signature it had not made before: ${JSON.stringify(r)}`,
        );
      }
    } finally {
      // The next test needs all three nodes, whatever happened here.
      await cluster.start(zombie);
    }
    await assertAuditClean(cluster);
  });

  it('with 2 of 3 etcd members down nothing is signed; restored, signing resumes', {
    timeout: 120_000,
  }, async () => {
    await cluster.leaderIndex();
    await Promise.all([cluster.etcd.kill(0), cluster.etcd.kill(1)]);
    // A signature whose reservation committed just before the kill may still be returned.
    await new Promise((r) => setTimeout(r, 1_500));
    const signedBefore = sims.reduce((n, s) => n + s.summary().signed, 0);
    const heightBefore = await clusterHeight(cluster);
    await new Promise((r) => setTimeout(r, 4_000));
    const signedDuring = sims.reduce((n, s) => n + s.summary().signed, 0);
    assert.equal(signedDuring, signedBefore, 'a signature was produced without an etcd quorum');
    // Without keepalives the lease counts as lost after one TTL: nobody leads or holds a session.
    for (let i = 0; i < cluster.nodes.length; i++) {
      const s = await cluster.status(i);
      assert.ok(s !== undefined, `node ${i} answers /status without etcd`);
      assert.equal(s.hsm.signing_session, false, `node ${i} still holds a signing session`);
      assert.equal(s.role, 'follower');
    }
    await cluster.etcd.restart(0);
    await cluster.etcd.restart(1);
    await waitProgress(cluster, heightBefore, 5, 45_000);
    assert.ok(sims.reduce((n, s) => n + s.summary().signed, 0) > signedDuring, 'signing resumed');
    await waitAgreement(cluster, 10_000);
  });
});
