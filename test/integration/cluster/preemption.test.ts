/**
 * Fenced pre-emption on a real 3-node cluster: a frozen (SIGSTOPped) leader keeps its lease
 * alive in etcd's eyes until its TTL runs out, but the followers find it silent on their
 * heartbeats, revoke its lease and elect another leader, which signs while the old one is still
 * frozen. Resumed, the old leader finds its leadership gone and follows; signing goes on.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { SignedMsgType } from '../../../src/cometbft/types.ts';
import type { ValidatorSimulator } from '../../../src/simulator/simulator.ts';
import { blockId } from '../../helpers/guard-fixtures.ts';
import { type KmsCluster, waitFor } from '../../helpers/kms-cluster.ts';
import { clusterWithSentry, signUntilAccepted } from '../../helpers/sentry.ts';

const CHAIN = 'preempt-1';
let cluster: KmsCluster;
let sim: ValidatorSimulator;

before(async () => {
  ({ cluster, sim } = await clusterWithSentry({ chainId: CHAIN, seed: 21, keyFill: 21 }));
});

after(async () => {
  await sim?.close();
  await cluster?.cleanup();
});

const sign = (height: bigint): Promise<void> =>
  signUntilAccepted(sim, sim.buildVote(SignedMsgType.Prevote, height, 0, blockId(1)));

it('a frozen leader is pre-empted by a follower and steps down when it resumes', async () => {
  await sign(10n);
  const frozen = await cluster.leaderIndex();
  cluster.pause(frozen);
  try {
    const next = await cluster.leaderIndex(20_000);
    assert.notEqual(next, frozen);
    await sign(11n);
    const preempted = cluster.nodes.some(
      (n, i) =>
        i !== frozen &&
        (n.proc?.logs() ?? []).some((l) => String(l['msg']).startsWith('leader silent; revoking its lease')),
    );
    assert.ok(preempted, 'a follower revoked the silent leader’s lease');
  } finally {
    cluster.resume(frozen);
  }
  await waitFor('the resumed node to follow', 15_000, async () => {
    const s = await cluster.status(frozen);
    return s?.role === 'follower' && s.leader_id !== null && s.leader_id !== s.node_id;
  });
  await sign(12n);
});
