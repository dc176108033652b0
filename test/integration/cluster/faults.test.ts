import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compareHRS, Step } from '../../../src/cometbft/types.ts';
import type { SignState } from '../../../src/store/types.ts';
import { initEtcdChainState, type TestNode, useEtcdTestBed, waitUntil } from '../../helpers/etcd-cluster.ts';

const CHAIN = 'fault-chain';
const bed = useEtcdTestBed('faults', { members: 3, unsafeNoFsync: true });

function vote(height: bigint, tag: string): SignState {
  return {
    height,
    round: 0,
    step: Step.Prevote,
    signBytes: new Uint8Array(Buffer.from(`${tag}-${height}`)),
    extensionSignBytes: new Uint8Array(),
    signature: new Uint8Array(),
  };
}

async function leaderNode(): Promise<TestNode> {
  const prefix = bed.nextPrefix();
  const n = await bed.leaderNode(prefix);
  await initEtcdChainState(n.clients.client, prefix, CHAIN);
  return n;
}

/**
 * Reserves the next height until it succeeds, checking on every read that the state never went
 * below the last successful reservation. Returns the reserved state.
 */
async function reserveEventually(n: TestNode, last: SignState, ms: number): Promise<SignState> {
  const next = vote(last.height + 1n, 'eventually');
  let done = false;
  await waitUntil('a successful reservation', ms, async () => {
    try {
      const cur = (await n.store.load(CHAIN))!;
      assert.ok(compareHRS(cur, last) >= 0, 'state went backwards');
      done = (await n.store.reserve(CHAIN, cur, next)).ok;
    } catch (err) {
      if (err instanceof assert.AssertionError) throw err;
      done = false;
    }
    return done;
  });
  return next;
}

/** Rejects with a clear message if `p` neither resolves nor rejects within `ms`. */
function bounded<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

test('without quorum a reservation fails within bounded time and never succeeds; it works again after', async () => {
  const n = await leaderNode();
  let last = vote(1n, 'before');
  assert.deepEqual(await n.store.reserve(CHAIN, (await n.store.load(CHAIN))!, last), { ok: true });

  const raftLeader = await bed.cluster.raftLeaderIndex();
  const victims = [0, 1, 2].filter((i) => i !== raftLeader);
  await Promise.all(victims.map((i) => bed.cluster.kill(i)));
  try {
    // several attempts over the outage: each must throw, none may report success
    for (let h = 2n; h < 6n; h++) {
      await assert.rejects(
        bounded(n.store.reserve(CHAIN, last, vote(h, 'no-quorum')), 5_000),
        (err: Error) => {
          assert.doesNotMatch(err.message, /no answer within/);
          return true;
        },
      );
    }
  } finally {
    for (const i of victims) await bed.cluster.restart(i);
  }
  last = await reserveEventually(n, last, 15_000);
  assert.equal((await n.store.load(CHAIN))!.height, last.height);
});

test('killing the etcd Raft leader: the store recovers and the state never goes backwards', async () => {
  const n = await leaderNode();
  let last = vote(1n, 'start');
  assert.deepEqual(await n.store.reserve(CHAIN, (await n.store.load(CHAIN))!, last), { ok: true });
  for (let round = 0; round < 2; round++) {
    const victim = await bed.cluster.raftLeaderIndex();
    await bed.cluster.kill(victim);
    try {
      last = await reserveEventually(n, last, 10_000);
    } finally {
      await bed.cluster.restart(victim);
    }
  }
  assert.equal((await n.store.load(CHAIN))!.height, last.height);
});

test('a frozen etcd member neither costs the lease nor stops reservations', async () => {
  const n = await leaderNode();
  const term = n.leadership.term;
  const raftLeader = await bed.cluster.raftLeaderIndex();
  const frozen = (raftLeader + 1) % 3;
  let cur = (await n.store.load(CHAIN))!;
  bed.cluster.pause(frozen);
  try {
    // 20 reservations spread over more than two lease TTLs
    for (let i = 0; i < 20; i++) {
      const next = vote(cur.height + 1n, 'frozen');
      assert.deepEqual(await n.store.reserve(CHAIN, cur, next), { ok: true });
      cur = next;
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    bed.cluster.resume(frozen);
  }
  assert.equal(n.leadership.term, term);
  assert.equal(n.leadership.role, 'leader');
});
