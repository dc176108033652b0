/**
 * Group commit of fenced state writes (src/store/etcd-batch.ts) and the cluster store on top of
 * it, against the in-memory etcd of test/helpers: adversarial batches (one chain's compare fails,
 * leadership lost while a batch is in flight, a second write of one chain in the same window, a
 * lost reply, an unexplained failure) and what each waiting request is told.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Step } from '../../../src/cometbft/types.ts';
import type { EtcdPort, EtcdTxn, EtcdTxnResult } from '../../../src/ports/etcd.ts';
import { NotLeaderError, StateMissingError } from '../../../src/store/errors.ts';
import {
  decodeSignState,
  EtcdSignStateStore,
  encodeSignState,
  etcdKeys,
  type FencingToken,
  fencingCompares,
  type LeadershipFence,
  leaderKeyMatches,
} from '../../../src/store/etcd.ts';
import { type BatchOutcome, type BatchWrite, EtcdWriteBatcher } from '../../../src/store/etcd-batch.ts';
import { HighWaterMarks, type MarkStorage } from '../../../src/store/high-water.ts';
import { freshSignState, type SignState } from '../../../src/store/types.ts';
import { MemoryEtcd } from '../../helpers/memory-etcd.ts';

const PREFIX = 'unit/';
const LEADER_KEY = etcdKeys.leader(PREFIX);
const stateKey = (chain: string): string => etcdKeys.state(PREFIX, chain);

/** Makes `etcd` hold a leader key for a term of this node; returns the term's token. */
function elect(etcd: MemoryEtcd, value = 'kms-1'): FencingToken {
  const leaseId = String(5000 + etcd.txns.length);
  etcd.put(LEADER_KEY, value, leaseId);
  const kv = etcd.peek(LEADER_KEY);
  assert.ok(kv);
  return { leaseId, createRevision: kv.createRevision, leaderValue: value };
}

function fence(token: FencingToken) {
  return {
    leaderKey: LEADER_KEY,
    compares: fencingCompares(LEADER_KEY, token),
    id: `${token.createRevision}|${token.leaseId}`,
    matches: (kv: Parameters<typeof leaderKeyMatches>[0]) => leaderKeyMatches(kv, token),
  };
}

function write(etcd: MemoryEtcd, token: FencingToken, chain: string, value: string): BatchWrite {
  const kv = etcd.peek(stateKey(chain));
  return {
    chainId: chain,
    stateKey: stateKey(chain),
    modRevision: kv?.modRevision ?? '0',
    value: Buffer.from(value),
    fence: fence(token),
    op: 'reserve',
  };
}

/** The state keys a transaction writes on success. */
function keysOf(txn: EtcdTxn | undefined): string[] {
  assert.ok(txn);
  return txn.success.map((o) => o.key);
}

describe('EtcdWriteBatcher', () => {
  it('groups the writes of other chains that wait for an in-flight transaction into the next one', async () => {
    const etcd = new MemoryEtcd();
    const token = elect(etcd);
    for (const c of ['a', 'b', 'c', 'd']) etcd.put(stateKey(c), 'init');
    const batcher = new EtcdWriteBatcher({ client: etcd });
    etcd.hold();
    const first = batcher.submit(write(etcd, token, 'a', 'a1'));
    await etcd.waitParked(1);
    const rest = ['b', 'c', 'd'].map((c) => batcher.submit(write(etcd, token, c, `${c}1`)));
    await new Promise((r) => setImmediate(r));
    assert.equal(etcd.parked, 1, 'nothing else is sent while a transaction is in flight');
    etcd.applyNext();
    await etcd.waitParked(1);
    const second = etcd.txns[1];
    assert.deepEqual(keysOf(second), ['b', 'c', 'd'].map(stateKey));
    // each chain brings its own state compare, after the three fencing compares
    assert.deepEqual(
      second?.compare.map((c) => `${c.key}:${c.target}`),
      [
        `${LEADER_KEY}:value`,
        `${LEADER_KEY}:create`,
        `${LEADER_KEY}:lease`,
        ...['b', 'c', 'd'].map((c) => `${stateKey(c)}:mod`),
      ],
    );
    etcd.applyNext();
    const outcomes = await Promise.all([first, ...rest]);
    assert.ok(outcomes.every((o) => o.kind === 'committed'));
    const [, ...batched] = outcomes as Array<Extract<BatchOutcome, { kind: 'committed' }>>;
    for (const c of ['b', 'c', 'd']) {
      assert.equal(etcd.peek(stateKey(c))?.value.toString(), `${c}1`);
      assert.equal(etcd.peek(stateKey(c))?.modRevision, batched[0]?.revision);
    }
    assert.equal(batcher.transactions, 2);
  });

  it('answers a chain whose compare failed with its state and retries the others alone', async () => {
    const etcd = new MemoryEtcd();
    const token = elect(etcd);
    for (const c of ['a', 'b', 'c']) etcd.put(stateKey(c), 'init');
    const batcher = new EtcdWriteBatcher({ client: etcd });
    etcd.hold();
    const writes = ['a', 'b', 'c'].map((c) => batcher.submit(write(etcd, token, c, `${c}1`)));
    await etcd.waitParked(1);
    // another writer moves chain b on while the batch is in flight
    etcd.put(stateKey('b'), 'b-elsewhere');
    const failed = etcd.applyNext();
    assert.equal(failed.succeeded, false);
    await etcd.waitParked(1);
    assert.deepEqual(keysOf(etcd.txns[1]), ['a', 'c'].map(stateKey), 'the retry carries only a and c');
    etcd.applyNext();
    const [a, b, c] = await Promise.all(writes);
    assert.equal(a?.kind, 'committed');
    assert.equal(c?.kind, 'committed');
    assert.equal(b?.kind, 'conflict');
    assert.equal(b?.kind === 'conflict' ? b.current?.value.toString() : undefined, 'b-elsewhere');
    assert.equal(etcd.peek(stateKey('b'))?.value.toString(), 'b-elsewhere', "b's write was not applied");
    assert.equal(etcd.peek(stateKey('a'))?.value.toString(), 'a1');
    assert.equal(etcd.peek(stateKey('c'))?.value.toString(), 'c1');
  });

  it('does not mistake the absence of a chain state for a conflict-free write, nor creates it', async () => {
    const etcd = new MemoryEtcd();
    const token = elect(etcd);
    etcd.put(stateKey('a'), 'init');
    etcd.put(stateKey('gone'), 'init');
    const batcher = new EtcdWriteBatcher({ client: etcd });
    etcd.hold();
    const a = batcher.submit(write(etcd, token, 'a', 'a1'));
    const gone = batcher.submit(write(etcd, token, 'gone', 'g1'));
    await etcd.waitParked(1);
    etcd.delete(stateKey('gone'));
    etcd.applyNext();
    await etcd.waitParked(1);
    etcd.applyNext();
    assert.deepEqual(await gone, { kind: 'conflict', current: undefined });
    assert.equal((await a).kind, 'committed');
    assert.equal(etcd.peek(stateKey('gone')), undefined, 'a missing state key is never created');
  });

  it('fails every write of a batch whose leader key changed while it was in flight', async () => {
    const etcd = new MemoryEtcd();
    const token = elect(etcd);
    for (const c of ['a', 'b', 'c']) etcd.put(stateKey(c), 'init');
    const batcher = new EtcdWriteBatcher({ client: etcd });
    etcd.hold();
    const writes = ['a', 'b', 'c'].map((c) => batcher.submit(write(etcd, token, c, `${c}1`)));
    await etcd.waitParked(1);
    elect(etcd, 'kms-2');
    etcd.applyNext();
    const outcomes = await Promise.all(writes);
    assert.deepEqual(
      outcomes.map((o) => o.kind),
      ['not_leader', 'not_leader', 'not_leader'],
    );
    assert.equal(etcd.txns.length, 1, 'nothing is retried for a lost term');
    for (const c of ['a', 'b', 'c']) assert.equal(etcd.peek(stateKey(c))?.value.toString(), 'init');
  });

  it('sends a second write of one chain in the next transaction, never two in one', async () => {
    const etcd = new MemoryEtcd();
    const token = elect(etcd);
    for (const c of ['a', 'b', 'c']) etcd.put(stateKey(c), 'init');
    const batcher = new EtcdWriteBatcher({ client: etcd });
    etcd.hold();
    const blocker = batcher.submit(write(etcd, token, 'b', 'b1'));
    await etcd.waitParked(1);
    const a1 = batcher.submit(write(etcd, token, 'a', 'a1'));
    const a2 = batcher.submit(write(etcd, token, 'a', 'a2'));
    const c1 = batcher.submit(write(etcd, token, 'c', 'c1'));
    etcd.applyNext();
    await etcd.waitParked(1);
    assert.deepEqual(keysOf(etcd.txns[1]), [stateKey('a'), stateKey('c')]);
    etcd.applyNext();
    await etcd.waitParked(1);
    assert.deepEqual(keysOf(etcd.txns[2]), [stateKey('a')], 'a2 waits for its own transaction');
    etcd.applyNext();
    assert.equal((await blocker).kind, 'committed');
    assert.equal((await a1).kind, 'committed');
    assert.equal((await c1).kind, 'committed');
    // a2 compared the revision a had before a1: it conflicts and sees a1, never overwrites it
    const second = await a2;
    assert.equal(second.kind, 'conflict');
    assert.equal(second.kind === 'conflict' ? second.current?.value.toString() : undefined, 'a1');
    assert.equal(etcd.peek(stateKey('a'))?.value.toString(), 'a1');
    for (const txn of etcd.txns) {
      const keys = keysOf(txn);
      assert.equal(new Set(keys).size, keys.length, 'one write per chain per transaction');
    }
  });

  it('keeps writes of another term out of a batch', async () => {
    const etcd = new MemoryEtcd();
    const old = elect(etcd);
    for (const c of ['a', 'b']) etcd.put(stateKey(c), 'init');
    const batcher = new EtcdWriteBatcher({ client: etcd });
    etcd.hold();
    const blocker = batcher.submit(write(etcd, old, 'a', 'a1'));
    await etcd.waitParked(1);
    const stale = batcher.submit(write(etcd, old, 'b', 'b-old'));
    const current = elect(etcd, 'kms-1b');
    const fresh = batcher.submit(write(etcd, current, 'a', 'a-new'));
    etcd.applyNext();
    await etcd.waitParked(1);
    assert.deepEqual(keysOf(etcd.txns[1]), [stateKey('b')]);
    etcd.applyNext();
    await etcd.waitParked(1);
    etcd.applyNext();
    assert.equal((await blocker).kind, 'not_leader');
    assert.equal((await stale).kind, 'not_leader');
    assert.equal((await fresh).kind, 'committed');
  });

  it('rejects every write of a transaction whose outcome is unknown, then carries on', async () => {
    const etcd = new MemoryEtcd();
    const token = elect(etcd);
    for (const c of ['a', 'b', 'c']) etcd.put(stateKey(c), 'init');
    const batcher = new EtcdWriteBatcher({ client: etcd });
    etcd.hold();
    const a = batcher.submit(write(etcd, token, 'a', 'a1'));
    const b = batcher.submit(write(etcd, token, 'b', 'b1'));
    await etcd.waitParked(1);
    const c = batcher.submit(write(etcd, token, 'c', 'c1'));
    etcd.failNext(new Error('deadline exceeded'), true);
    await assert.rejects(a, /deadline exceeded/);
    await assert.rejects(b, /deadline exceeded/);
    await etcd.waitParked(1);
    etcd.applyNext();
    assert.equal((await c).kind, 'committed');
  });

  it('rejects the writes of a failed transaction in which no compare is seen to fail', async () => {
    const etcd = new MemoryEtcd();
    const token = elect(etcd);
    etcd.put(stateKey('a'), 'init');
    etcd.put(stateKey('b'), 'init');
    // a port that fails the transaction although the keys it reads still match
    const odd: EtcdPort = Object.assign(Object.create(etcd) as MemoryEtcd, {
      txn: async (txn: EtcdTxn): Promise<EtcdTxnResult> => {
        const res = etcd.apply({ compare: [], success: txn.failure, failure: [] });
        return { ...res, succeeded: false };
      },
    });
    const batcher = new EtcdWriteBatcher({ client: odd });
    const writes = [
      batcher.submit(write(etcd, token, 'a', 'a1')),
      batcher.submit(write(etcd, token, 'b', 'b1')),
    ];
    for (const w of writes) await assert.rejects(w, /compares all held/);
    assert.equal(batcher.transactions, 1, 'not retried blindly');
  });
});

/** Marks kept in memory (what a crash would keep is not the point here). */
class MemoryMarks implements MarkStorage {
  readonly marks = new Map<string, { height: bigint; round: number; step: number }>();
  read(chainId: string) {
    return this.marks.get(chainId);
  }
  write(chainId: string, hrs: { height: bigint; round: number; step: number }): void {
    this.marks.set(chainId, { ...hrs });
  }
}

function vote(height: bigint, chain: string): SignState {
  return {
    height,
    round: 0,
    step: Step.Prevote,
    signBytes: new Uint8Array(Buffer.from(`${chain}-${height}`)),
    extensionSignBytes: new Uint8Array(),
    signature: new Uint8Array(),
  };
}

function storeOn(etcd: MemoryEtcd, token: FencingToken | undefined) {
  const stepDowns: string[] = [];
  const leadership: LeadershipFence = {
    token,
    stepDown: (reason) => stepDowns.push(reason),
  };
  const marks = new MemoryMarks();
  const ops: string[] = [];
  const store = new EtcdSignStateStore({
    client: etcd,
    prefix: PREFIX,
    leadership,
    marks: new HighWaterMarks(marks),
    observer: (op) => ops.push(op),
  });
  return { store, stepDowns, marks, ops };
}

describe('EtcdSignStateStore over the batcher', () => {
  it('reserves concurrent chains in one transaction after the one in flight, without reads', async () => {
    const etcd = new MemoryEtcd();
    const token = elect(etcd);
    const chains = ['c1', 'c2', 'c3', 'c4', 'c5'];
    for (const c of chains) etcd.put(stateKey(c), encodeSignState(freshSignState()));
    const { store, marks, ops } = storeOn(etcd, token);
    for (const c of chains) await store.load(c);
    const reads = etcd.gets;
    const sent = etcd.txns.length;
    ops.length = 0;
    etcd.hold();
    const first = store.reserve('c1', freshSignState(), vote(1n, 'c1'));
    await etcd.waitParked(1);
    const results = [first, ...chains.slice(1).map((c) => store.reserve(c, freshSignState(), vote(1n, c)))];
    etcd.applyNext();
    await etcd.waitParked(1);
    etcd.applyNext();
    for (const r of await Promise.all(results)) assert.deepEqual(r, { ok: true });
    assert.equal(etcd.gets, reads, 'no read before (or after) the transactions');
    assert.equal(etcd.txns.length - sent, 2, 'two transactions for five chains');
    assert.deepEqual(ops, ['reserve', 'reserve']);
    for (const c of chains) {
      assert.equal(decodeSignState(etcd.peek(stateKey(c))?.value ?? Buffer.alloc(0), c).height, 1n);
      assert.equal(marks.marks.get(c)?.height, 1n, 'the mark is raised before the reservation is reported');
    }
    // the next reservation of every chain compares the revision its batch committed at
    etcd.open();
    for (const c of chains) assert.deepEqual(await store.reserve(c, vote(1n, c), vote(2n, c)), { ok: true });
  });

  it("reports one chain's conflict with its own current state and commits the others", async () => {
    const etcd = new MemoryEtcd();
    const token = elect(etcd);
    for (const c of ['x', 'y', 'z']) etcd.put(stateKey(c), encodeSignState(freshSignState()));
    const { store } = storeOn(etcd, token);
    for (const c of ['x', 'y', 'z']) await store.load(c);
    etcd.hold();
    const results = ['x', 'y', 'z'].map((c) => store.reserve(c, freshSignState(), vote(5n, c)));
    await etcd.waitParked(1);
    etcd.put(stateKey('y'), encodeSignState(vote(7n, 'y')));
    etcd.open();
    const [x, y, z] = await Promise.all(results);
    assert.deepEqual(x, { ok: true });
    assert.deepEqual(z, { ok: true });
    assert.equal(y?.ok, false);
    assert.equal(y?.ok === false ? y.current.height : undefined, 7n);
    assert.equal(
      Buffer.from(y?.ok === false ? y.current.signBytes : new Uint8Array()).toString(),
      'y-7',
      "y is answered with y's state, not another chain's",
    );
  });

  it('steps down once per failed write and throws NotLeaderError when the term ends mid-batch', async () => {
    const etcd = new MemoryEtcd();
    const token = elect(etcd);
    for (const c of ['p', 'q']) etcd.put(stateKey(c), encodeSignState(freshSignState()));
    const { store, stepDowns } = storeOn(etcd, token);
    for (const c of ['p', 'q']) await store.load(c);
    etcd.hold();
    const results = ['p', 'q'].map((c) => store.reserve(c, freshSignState(), vote(1n, c)));
    await etcd.waitParked(1);
    elect(etcd, 'kms-2');
    etcd.open();
    for (const r of results) await assert.rejects(r, NotLeaderError);
    assert.ok(stepDowns.length >= 1);
    for (const c of ['p', 'q']) assert.equal(decodeSignState(etcd.peek(stateKey(c))!.value, c).height, 0n);
  });

  it('refuses a chain whose state key vanished mid-batch without creating it', async () => {
    const etcd = new MemoryEtcd();
    const token = elect(etcd);
    for (const c of ['m', 'n']) etcd.put(stateKey(c), encodeSignState(freshSignState()));
    const { store } = storeOn(etcd, token);
    for (const c of ['m', 'n']) await store.load(c);
    etcd.hold();
    const m = store.reserve('m', freshSignState(), vote(1n, 'm'));
    const n = store.reserve('n', freshSignState(), vote(1n, 'n'));
    await etcd.waitParked(1);
    etcd.delete(stateKey('n'));
    etcd.open();
    assert.deepEqual(await m, { ok: true });
    // this node saw the key (its mark is set): a vanished key is a regression, never a new start
    await assert.rejects(
      n,
      (err: Error) => err.name === 'StateRegressionError' || err instanceof StateMissingError,
    );
    assert.equal(etcd.peek(stateKey('n')), undefined);
  });

  it('records a durable (secp256k1) signature through the batcher as a fenced write', async () => {
    const etcd = new MemoryEtcd();
    const token = elect(etcd);
    etcd.put(stateKey('k'), encodeSignState(freshSignState()));
    const { store, ops } = storeOn(etcd, token);
    await store.load('k');
    const next = vote(3n, 'k');
    assert.deepEqual(await store.reserve('k', freshSignState(), next), { ok: true });
    await store.recordSignature('k', next, new Uint8Array([1, 2, 3]), { durable: true });
    assert.deepEqual([...decodeSignState(etcd.peek(stateKey('k'))!.value, 'k').signature], [1, 2, 3]);
    assert.deepEqual(ops, ['state_read', 'reserve', 'record']);
    // ed25519: kept with the cached state only, no write
    const later = vote(4n, 'k');
    const signed = { ...next, signature: new Uint8Array([1, 2, 3]) };
    assert.deepEqual(await store.reserve('k', signed, later), { ok: true });
    const txns = etcd.txns.length;
    await store.recordSignature('k', later, new Uint8Array([9]), { durable: false });
    assert.equal(etcd.txns.length, txns);
  });
});
