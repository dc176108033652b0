/**
 * Two validator nodes race conflicting votes through a real 3-node cluster (ARCHITECTURE.md §2,
 * invariant 1): at the same moment, node A asks for a prevote for block X and node B for block Y
 * at the same height/round. The KMS nodes' connections to A and B may land on the leader or on
 * followers (which forward), so the race runs through forwarding and the fenced reservation.
 * Each round: exactly one gets a signature, the other a conflict error (possibly after empty
 * "try again" replies), and the replicated state in etcd holds the winner's sign bytes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Etcd3 } from 'etcd3';
import { voteSignBytes } from '../../src/cometbft/signbytes.ts';
import { type PrivvalMessage, SignedMsgType, type Vote } from '../../src/cometbft/types.ts';
import { SignRecord } from '../../src/simulator/sign-record.ts';
import type { ValidatorSimulator } from '../../src/simulator/simulator.ts';
import { decodeSignState, etcdKeys } from '../../src/store/etcd.ts';
import { type KmsCluster, startKmsCluster } from '../helpers/kms-cluster.ts';
import { manualSentry } from '../helpers/sentry.ts';

const CHAIN = 'cluster-race-1';
const ROUNDS = 40;
/** "try again" replies tolerated per request before the round counts as failed */
const MAX_EMPTY = 100;

describe('cluster: two validators race conflicting votes', () => {
  let cluster: KmsCluster;
  let etcd: Etcd3;
  const record = new SignRecord();
  const sims: ValidatorSimulator[] = [];

  before(async () => {
    for (let i = 0; i < 2; i++) {
      sims.push(manualSentry(CHAIN, 77 + i, { record }));
    }
    const validators = await Promise.all(sims.map((s) => s.listen()));
    cluster = await startKmsCluster({
      chainId: CHAIN,
      protocol: 'v0.38',
      validators,
      keySeed: new Uint8Array(32).fill(5),
    });
    etcd = new Etcd3({ hosts: cluster.etcd.endpoints });
    for (const s of sims) {
      assert.ok(await s.waitForSigner(30_000), 'a KMS node connected');
      await s.requestPubKey();
    }
    await cluster.leaderIndex();
  });

  after(async () => {
    await Promise.all(sims.map((s) => s.close()));
    etcd?.close();
    await cluster?.cleanup();
  });

  /** Sends `vote` until the reply is not "try again"; returns the final reply. */
  async function untilAnswered(sim: ValidatorSimulator, vote: Vote): Promise<PrivvalMessage> {
    for (let i = 0; i < MAX_EMPTY; i++) {
      const reply = await sim.requestVote(vote);
      if (reply.kind !== 'empty') return reply;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no answer after ${MAX_EMPTY} attempts`);
  }

  it(`exactly one of two conflicting votes is signed, ${ROUNDS} rounds`, { timeout: 120_000 }, async () => {
    const [a, b] = sims as [ValidatorSimulator, ValidatorSimulator];
    const wins = { a: 0, b: 0 };
    for (let r = 0; r < ROUNDS; r++) {
      const height = BigInt(100 + r);
      const voteA = a.buildVote(SignedMsgType.Prevote, height, 0, a.blockIdFor(height, 0));
      const other = a.blockIdFor(height, 1);
      const voteB = { ...b.buildVote(SignedMsgType.Prevote, height, 0, other), timestamp: voteA.timestamp };
      const [ra, rb] = await Promise.all([untilAnswered(a, voteA), untilAnswered(b, voteB)]);
      const signed = (m: PrivvalMessage): boolean =>
        m.kind === 'signedVoteResponse' && m.error === undefined && m.vote.signature.length > 0;
      const conflict = (m: PrivvalMessage): boolean =>
        m.kind === 'signedVoteResponse' && /conflicting data/.test(m.error?.description ?? '');
      assert.ok(
        (signed(ra) && conflict(rb)) || (signed(rb) && conflict(ra)),
        `round ${r}: ${JSON.stringify([ra.kind, rb.kind, errorOf(ra), errorOf(rb)])}`,
      );
      const winner = signed(ra) ? voteA : voteB;
      if (signed(ra)) wins.a++;
      else wins.b++;
      const kv = await etcd.get(etcdKeys.state('/cometkms/', CHAIN).toString()).buffer();
      assert.ok(kv !== null, 'the state key exists');
      const state = decodeSignState(kv, 'state');
      assert.equal(state.height, height);
      assert.deepEqual(
        Buffer.from(state.signBytes),
        Buffer.from(voteSignBytes(CHAIN, winner)),
        `round ${r}: the replicated state holds the winner's sign bytes`,
      );
    }
    assert.deepEqual(record.doubleSigns, []);
    for (const s of sims) assert.equal(s.summary().invalidSignatures, 0);
    assert.equal(wins.a + wins.b, ROUNDS);
  });
});

function errorOf(m: PrivvalMessage): string | undefined {
  return m.kind === 'signedVoteResponse' ? m.error?.description : undefined;
}
