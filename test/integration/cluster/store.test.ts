import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Step } from '../../../src/cometbft/types.ts';
import { NotLeaderError, StateMissingError, StateRegressionError } from '../../../src/store/errors.ts';
import {
  EtcdSignStateStore,
  encodeSignState,
  etcdKeys,
  type FencingToken,
  readEtcdStateRecord,
  swapEtcdSignState,
} from '../../../src/store/etcd.ts';
import { HighWaterMarks, readHighWater } from '../../../src/store/high-water.ts';
import { freshSignState, type SignState } from '../../../src/store/types.ts';
import { initEtcdChainState, type TestNode, useEtcdTestBed, waitUntil } from '../../helpers/etcd-cluster.ts';
import { GatedMarkStorage } from '../../helpers/gated-marks.ts';

const CHAIN = 'test-chain';
const bed = useEtcdTestBed('store', { members: 3, unsafeNoFsync: true });

function state(height: bigint, round: number, step: number, bytes: string): SignState {
  return {
    height,
    round,
    step,
    signBytes: new Uint8Array(Buffer.from(bytes)),
    extensionSignBytes: new Uint8Array(),
    signature: new Uint8Array(),
  };
}

/** Nodes under a new prefix where `state init` created the chain's state (unless `init: false`). */
async function nodes(ids: string[], init = true): Promise<{ prefix: string; nodes: TestNode[] }> {
  const prefix = bed.nextPrefix();
  const ns = ids.map((id) => bed.node(prefix, id));
  if (init) assert.equal(await initEtcdChainState(ns[0]!.clients.client, prefix, CHAIN), true);
  await Promise.all(ns.map((n) => n.leadership.start()));
  await waitUntil('a leader', 5_000, () => ns.some((n) => n.leadership.role === 'leader'));
  return { prefix, nodes: ns };
}

/** Another store of node `n` (no cache, like a restarted process), with the same home. */
function restarted(n: TestNode, prefix: string): EtcdSignStateStore {
  return new EtcdSignStateStore({
    client: n.clients.client,
    prefix,
    leadership: n.leadership,
    marks: new HighWaterMarks(n.home),
  });
}

/** The state as stored in etcd, read by a client that is not part of any node. */
async function stored(n: TestNode, prefix: string): Promise<string | null> {
  return await n.clients.client.get(etcdKeys.state(prefix, CHAIN).toString()).string();
}

test('a chain without a state key has NO state: load never creates one, reserve is refused', async () => {
  const {
    prefix,
    nodes: [n],
  } = await nodes(['kms-1'], false);
  assert.equal(await n!.store.load(CHAIN), undefined);
  await assert.rejects(
    n!.store.reserve(CHAIN, freshSignState(), state(1n, 0, Step.Prevote, 'v1')),
    StateMissingError,
  );
  assert.equal(await stored(n!, prefix), null, 'nothing was created');
  // `state init` creates it, only while absent
  assert.equal(await initEtcdChainState(n!.clients.client, prefix, CHAIN, 40n), true);
  assert.equal(await initEtcdChainState(n!.clients.client, prefix, CHAIN), false);
  assert.deepEqual(await n!.store.load(CHAIN), freshSignState(40n));
});

test('load reads the state; reserve writes it durably; a non-durable record writes nothing to etcd', async () => {
  const {
    prefix,
    nodes: [n],
  } = await nodes(['kms-1']);
  const s = n!.store;
  const init = await s.load(CHAIN);
  assert.deepEqual(init, freshSignState());
  const next = state(5n, 0, Step.Propose, 'proposal-5');
  assert.deepEqual(await s.reserve(CHAIN, init!, next), { ok: true });
  await s.recordSignature(CHAIN, next, new Uint8Array([1, 2, 3]), { durable: false });
  // a fresh store (no cache, like a new leader after a failover) sees exactly the reservation
  const fresh = restarted(n!, prefix);
  assert.deepEqual(await fresh.load(CHAIN), next);
  // recording for a state that moved on is a no-op
  const later = state(5n, 0, Step.Prevote, 'prevote-5');
  assert.deepEqual(await fresh.reserve(CHAIN, (await fresh.load(CHAIN))!, later), { ok: true });
  await s.recordSignature(CHAIN, next, new Uint8Array([9]), { durable: false });
  assert.deepEqual(await fresh.load(CHAIN), later);
});

test('a durable record (secp256k1) writes the signature to etcd with one more fenced transaction', async () => {
  const {
    prefix,
    nodes: [n],
  } = await nodes(['kms-1']);
  const s = n!.store;
  const next = state(6n, 0, Step.Prevote, 'prevote-6');
  assert.deepEqual(await s.reserve(CHAIN, (await s.load(CHAIN))!, next), { ok: true });
  await s.recordSignature(CHAIN, next, new Uint8Array([4, 5]), { durable: true });
  assert.deepEqual(await restarted(n!, prefix).load(CHAIN), { ...next, signature: new Uint8Array([4, 5]) });
  // and the leader's cache follows the new revision: it reserves on in one round trip
  const after = state(6n, 0, Step.Precommit, 'precommit-6');
  assert.deepEqual(await s.reserve(CHAIN, { ...next, signature: new Uint8Array([4, 5]) }, after), {
    ok: true,
  });
});

test('the high-water mark: a wiped etcd, a lower state, a wrong prefix are refused, also after a restart', async () => {
  const {
    prefix,
    nodes: [n],
  } = await nodes(['kms-1']);
  const s = n!.store;
  const high = state(100n, 2, Step.Precommit, 'precommit-100');
  assert.deepEqual(await s.reserve(CHAIN, (await s.load(CHAIN))!, high), { ok: true });
  // durable in the node's home before the reservation was reported
  assert.deepEqual(readHighWater(n!.home, CHAIN), { height: 100n, round: 2, step: 3 });

  // etcd wiped: the key is gone; this node saw a state, so "missing" is a regression
  await n!.clients.client.delete().key(etcdKeys.state(prefix, CHAIN).toString());
  await assert.rejects(s.load(CHAIN), /has seen it at 100\/2\/3/);
  await assert.rejects(restarted(n!, prefix).load(CHAIN), StateRegressionError);
  // an operator's `state init` after the wipe creates 0/0/0, still below the mark
  await initEtcdChainState(n!.clients.client, prefix, CHAIN);
  await assert.rejects(restarted(n!, prefix).load(CHAIN), /below 100\/2\/3 that this node has seen/);
  // a wrong prefix looks like a wiped store to a node that has seen the chain
  await assert.rejects(restarted(n!, `${prefix}wrong/`).load(CHAIN), StateRegressionError);
  // the operator's recovery: import the last signed state (at or above the mark)
  const current = await readEtcdStateRecord(n!.clients.client, prefix, CHAIN);
  assert.equal(await swapEtcdSignState(n!.clients.client, prefix, CHAIN, current, high), true);
  assert.deepEqual(await restarted(n!, prefix).load(CHAIN), high);
});

test('two stores racing conflicting reservations at one HRS: exactly one wins, the other sees its bytes', async () => {
  const {
    prefix,
    nodes: [n],
  } = await nodes(['kms-1']);
  const a = n!.store;
  const b = restarted(n!, prefix);
  const base = (await a.load(CHAIN))!;
  assert.deepEqual(await b.load(CHAIN), base);
  const va = state(7n, 1, Step.Prevote, 'vote-for-A');
  const vb = state(7n, 1, Step.Prevote, 'vote-for-B');
  const [ra, rb] = await Promise.all([a.reserve(CHAIN, base, va), b.reserve(CHAIN, base, vb)]);
  const wins = [ra, rb].filter((r) => r.ok);
  assert.equal(wins.length, 1);
  const [winner, loser] = ra.ok ? [va, rb] : [vb, ra];
  assert.equal(loser.ok, false);
  assert.ok(!loser.ok);
  assert.deepEqual(loser.current, winner);
  assert.deepEqual(await b.load(CHAIN), winner);
});

test('a zombie leader whose lease is gone is fenced: NotLeaderError, stepDown, nothing written', async () => {
  const { prefix, nodes: ns } = await nodes(['kms-1', 'kms-2']);
  const zombie = ns.find((n) => n.leadership.role === 'leader')!;
  const other = ns.find((n) => n !== zombie)!;
  const before = (await zombie.store.load(CHAIN))!;
  const staleToken = zombie.leadership.token!;
  // Simulate a pause long enough for the lease to expire: etcd drops the lease and the leader key.
  await other.clients.client.leaseClient.leaseRevoke({ ID: staleToken.leaseId });
  await waitUntil('the other node to lead', 5_000, () => other.leadership.role === 'leader');

  // The zombie still believes it leads (its token was captured before the pause).
  const stepDowns: FencingToken[] = [];
  const zombieStore = new EtcdSignStateStore({
    client: zombie.clients.client,
    prefix,
    leadership: { token: staleToken, stepDown: (_reason, t) => stepDowns.push(t) },
    marks: new HighWaterMarks(zombie.home),
  });
  assert.deepEqual(await zombieStore.load(CHAIN), before);
  await assert.rejects(
    zombieStore.reserve(CHAIN, before, state(9n, 0, Step.Prevote, 'zombie')),
    NotLeaderError,
  );
  // A non-durable record writes nothing to etcd at all, so a zombie's record cannot either.
  await zombieStore.recordSignature(CHAIN, before, new Uint8Array([7]), { durable: false });
  assert.deepEqual(stepDowns, [staleToken]);
  assert.equal(await stored(zombie, prefix), encodeSignState(before).toString());

  // the real leader writes on
  const cur = (await other.store.load(CHAIN))!;
  assert.deepEqual(await other.store.reserve(CHAIN, cur, state(9n, 0, Step.Prevote, 'leader')), { ok: true });
});

test('after a transfer the old leader refuses to write and the new one writes on', async () => {
  const { prefix, nodes: ns } = await nodes(['kms-1', 'kms-2']);
  const old = ns.find((n) => n.leadership.role === 'leader')!;
  const other = ns.find((n) => n !== old)!;
  const s0 = (await old.store.load(CHAIN))!;
  assert.deepEqual(await old.store.reserve(CHAIN, s0, state(3n, 0, Step.Propose, 'p3')), { ok: true });
  await old.leadership.transferTo(other.nodeId);
  await waitUntil('the other node to lead', 5_000, () => other.leadership.role === 'leader');
  const cur = (await other.store.load(CHAIN))!;
  assert.deepEqual(await other.store.reserve(CHAIN, cur, state(3n, 0, Step.Prevote, 'v3')), { ok: true });
  // old no longer has a token: refused before any round trip
  await assert.rejects(old.store.reserve(CHAIN, cur, state(3n, 0, Step.Precommit, 'old')), NotLeaderError);
  assert.equal(await stored(old, prefix), encodeSignState(state(3n, 0, Step.Prevote, 'v3')).toString());
});

test('a stored state that goes backwards is an error, not a new baseline', async () => {
  const {
    prefix,
    nodes: [n],
  } = await nodes(['kms-1']);
  const s = n!.store;
  const high = state(100n, 2, Step.Precommit, 'precommit-100');
  assert.deepEqual(await s.reserve(CHAIN, (await s.load(CHAIN))!, high), { ok: true });
  // a restored backup puts an older state under the key
  await n!.clients.client
    .put(etcdKeys.state(prefix, CHAIN))
    .value(encodeSignState(state(90n, 0, Step.Prevote, 'old')));
  await assert.rejects(s.load(CHAIN), StateRegressionError);
  await assert.rejects(s.reserve(CHAIN, high, state(101n, 0, Step.Propose, 'p101')), StateRegressionError);
  // and nothing was written over the restored value
  assert.equal(await stored(n!, prefix), encodeSignState(state(90n, 0, Step.Prevote, 'old')).toString());
});

test('reserve refuses to move below the expected state', async () => {
  const {
    nodes: [n],
  } = await nodes(['kms-1']);
  const s = n!.store;
  const cur = state(10n, 0, Step.Prevote, 'v10');
  assert.deepEqual(await s.reserve(CHAIN, (await s.load(CHAIN))!, cur), { ok: true });
  await assert.rejects(s.reserve(CHAIN, cur, state(9n, 0, Step.Prevote, 'v9')), StateRegressionError);
});

test('an unreadable state in etcd is an error (never signed against)', async () => {
  const {
    prefix,
    nodes: [n],
  } = await nodes(['kms-1']);
  await n!.clients.client.put(etcdKeys.state(prefix, CHAIN)).value('{"height":"12","round":0}');
  await assert.rejects(n!.store.load(CHAIN), /sign state .* is invalid/);
  await assert.rejects(
    n!.store.reserve(CHAIN, freshSignState(), state(13n, 0, Step.Prevote, 'v')),
    /is invalid/,
  );
});

test('operator swap (state import): one compare-and-swap; the leader continues from it, never below', async () => {
  const {
    prefix,
    nodes: [n],
  } = await nodes(['kms-1'], false);
  const client = n!.clients.client;
  const observed: Array<[string, boolean]> = [];
  const s = new EtcdSignStateStore({
    client,
    prefix,
    leadership: n!.leadership,
    marks: n!.marks,
    observer: (op, ms, ok) => {
      assert.ok(ms >= 0);
      observed.push([op, ok]);
    },
  });
  // Absent key: created only while it is still absent.
  assert.equal(await readEtcdStateRecord(client, prefix, CHAIN), undefined);
  const seeded = state(10n, 0, Step.Precommit, 'precommit-10');
  assert.equal(await swapEtcdSignState(client, prefix, CHAIN, undefined, seeded), true);
  assert.equal(await swapEtcdSignState(client, prefix, CHAIN, undefined, state(1n, 0, 1, 'x')), false);
  const read = await readEtcdStateRecord(client, prefix, CHAIN);
  assert.ok(read !== undefined);

  // The leader signs on from the seed.
  const loaded = (await s.load(CHAIN))!;
  assert.deepEqual(loaded, seeded);
  const prevote11 = state(11n, 0, Step.Prevote, 'prevote-11');
  assert.deepEqual(await s.reserve(CHAIN, loaded, prevote11), { ok: true });

  // A swap against the revision read before that reservation fails and writes nothing.
  assert.equal(await swapEtcdSignState(client, prefix, CHAIN, read, state(50n, 0, 1, 'x')), false);
  // Against the current revision it goes through, with the leader running.
  const imported = state(50n, 0, Step.Precommit, 'precommit-50');
  const current = await readEtcdStateRecord(client, prefix, CHAIN);
  assert.equal(await swapEtcdSignState(client, prefix, CHAIN, current, imported), true);
  // The leader's next reservation (its cache still says 11/0/2) fails the mod-revision compare
  // and reports the imported state, in the same round trip; above it, it reserves again.
  const precommit11 = state(11n, 0, Step.Precommit, 'precommit-11');
  assert.deepEqual(await s.reserve(CHAIN, prevote11, precommit11), { ok: false, current: imported });
  const prevote51 = state(51n, 0, Step.Prevote, 'prevote-51');
  assert.deepEqual(await s.reserve(CHAIN, imported, prevote51), { ok: true });
  assert.equal(await stored(n!, prefix), encodeSignState(prevote51).toString());

  // Every call was reported to the observer, as answered.
  assert.deepEqual(observed, [
    ['state_read', true],
    ['reserve', true],
    ['reserve', true],
    ['reserve', true],
  ]);
});

test('group commit on real etcd: chains reserved in one transaction; a moved chain is answered alone, the others commit', async () => {
  const {
    prefix,
    nodes: [n],
  } = await nodes(['kms-1']);
  const leader = n!;
  await waitUntil('leadership', 5_000, () => leader.leadership.role === 'leader');
  const chains = ['g-a', 'g-b', 'g-c'];
  for (const c of chains) assert.equal(await initEtcdChainState(leader.clients.client, prefix, c), true);
  for (const c of chains) assert.deepEqual(await leader.store.load(c), freshSignState());
  // Another writer (an operator's import) moves g-b on behind the store's back.
  const record = await readEtcdStateRecord(leader.clients.client, prefix, 'g-b');
  assert.ok(record);
  assert.equal(
    await swapEtcdSignState(leader.clients.client, prefix, 'g-b', record, state(9n, 0, Step.Prevote, 'b9')),
    true,
  );
  // Submitted in one turn: one transaction carries all three; g-b's compare fails in it.
  const results = await Promise.all(
    chains.map((c) => leader.store.reserve(c, freshSignState(), state(1n, 0, Step.Prevote, `${c}-1`))),
  );
  assert.deepEqual(results[0], { ok: true });
  assert.deepEqual(results[2], { ok: true });
  const b = results[1];
  assert.equal(b?.ok, false);
  assert.equal(b?.ok === false ? Buffer.from(b.current.signBytes).toString() : '', 'b9');
  const a = await readEtcdStateRecord(leader.clients.client, prefix, 'g-a');
  const c = await readEtcdStateRecord(leader.clients.client, prefix, 'g-c');
  // retried together, without g-b: one revision for both writes
  assert.equal(a?.modRevision, c?.modRevision);
  // the next reservations compare the revisions the batch committed at
  const next = await Promise.all(
    ['g-a', 'g-c'].map((id) =>
      leader.store.reserve(
        id,
        state(1n, 0, Step.Prevote, `${id}-1`),
        state(1n, 0, Step.Precommit, `${id}-2`),
      ),
    ),
  );
  assert.deepEqual(next, [{ ok: true }, { ok: true }]);
  assert.equal(readHighWater(leader.home, 'g-a')?.step, Step.Precommit);
});

test('markConfirmedByCaller: a committed reservation does not wait for the mark; the caller’s raise does, and fails with the disk', async () => {
  const {
    prefix,
    nodes: [n],
  } = await nodes(['kms-1']);
  const disk = new GatedMarkStorage();
  const marks = new HighWaterMarks(disk);
  const s = new EtcdSignStateStore({
    client: n!.clients.client,
    prefix,
    leadership: n!.leadership,
    marks,
    markConfirmedByCaller: true,
  });
  const init = await s.load(CHAIN);
  assert.ok(init !== undefined);
  disk.held = true;
  const next = state(6n, 0, Step.Prevote, 'prevote-6');
  assert.deepEqual(await s.reserve(CHAIN, init, next), { ok: true });
  assert.equal(disk.read(CHAIN)?.height, 0n, 'reserve resolved while the mark was still being written');
  assert.deepEqual(
    marks.get(CHAIN),
    { height: 6n, round: 0, step: Step.Prevote },
    'raised in memory at once',
  );
  // The disk fails: the caller's raise (PeerQuorum.confirm's) rejects, so nothing is signed.
  disk.failing = true;
  const confirming = marks.raiseDurably(CHAIN, next);
  disk.release();
  await assert.rejects(confirming, /the disk failed/);
  disk.failing = false;
  await marks.raiseDurably(CHAIN, next);
  assert.equal(disk.read(CHAIN)?.height, 6n);
});
