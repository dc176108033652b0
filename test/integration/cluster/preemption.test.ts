/**
 * Fenced pre-emption on a real 3-node cluster: a frozen (SIGSTOPped) leader keeps its lease
 * alive in etcd's eyes until its TTL runs out, but the followers find it silent on their
 * heartbeats, revoke its lease and elect another leader, which signs while the old one is still
 * frozen. Resumed, the old leader finds its leadership gone and follows; signing goes on.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { type PrivvalMessage, SignedMsgType, type Vote } from '../../../src/cometbft/types.ts';
import { ValidatorSimulator } from '../../../src/simulator/simulator.ts';
import { blockId } from '../../helpers/guard-fixtures.ts';
import { type KmsCluster, startKmsCluster, waitFor } from '../../helpers/kms-cluster.ts';

const CHAIN = 'preempt-1';
let cluster: KmsCluster;
let sim: ValidatorSimulator;

before(async () => {
  sim = new ValidatorSimulator({
    listen: 'tcp://127.0.0.1:0',
    chainId: CHAIN,
    protocol: 'v0.38',
    blockTimeMs: 0,
    heights: 0,
    seed: 21,
    extensions: false,
  });
  const addr = await sim.listen();
  cluster = await startKmsCluster({
    chainId: CHAIN,
    protocol: 'v0.38',
    validators: [addr],
    keySeed: new Uint8Array(32).fill(21),
  });
  assert.ok(await sim.waitForSigner(30_000));
});

after(async () => {
  await sim?.close();
  await cluster?.cleanup();
});

const signed = (m: PrivvalMessage | undefined): boolean =>
  m?.kind === 'signedVoteResponse' && m.error === undefined && m.vote.signature.length > 0;
const prevote = (height: bigint): Vote => sim.buildVote(SignedMsgType.Prevote, height, 0, blockId(1));

async function sign(height: bigint): Promise<void> {
  await waitFor(`a signature at ${height}`, 20_000, async () =>
    signed(await sim.requestVote(prevote(height)).catch(() => undefined)),
  );
}

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
