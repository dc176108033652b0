import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  answerControl,
  type BallotStorage,
  FileBallotStorage,
  PeerMarkedStore,
  PeerQuorum,
} from '../../../src/cluster/peer-marks.ts';
import {
  ControlKind,
  decodeMarksAnswer,
  encodeControlRequest,
  encodeMarksAnswer,
  parseControlRequest,
} from '../../../src/cluster/peer-wire.ts';
import type { HRS } from '../../../src/cometbft/types.ts';
import type { PeerAddress, PeerMark, PeerMarks, PeerPort } from '../../../src/ports/peers.ts';
import { PeerQuorumError, StateRegressionError } from '../../../src/store/errors.ts';
import { HighWaterMarks, type MarkStorage } from '../../../src/store/high-water.ts';
import {
  freshSignState,
  type ReserveResult,
  type SignState,
  type SignStateStore,
} from '../../../src/store/types.ts';
import { GatedMarkStorage } from '../../helpers/gated-marks.ts';

const CHAIN = 'pm-chain';
const hrs = (height: number, round = 0, step = 2): HRS => ({ height: BigInt(height), round, step });

class MemoryMarks implements MarkStorage {
  readonly marks = new Map<string, HRS>();
  read(chainId: string): HRS | undefined {
    return this.marks.get(chainId);
  }
  write(chainId: string, h: HRS): void {
    this.marks.set(chainId, { ...h });
  }
}

/** Turns of the event loop until `cond` holds (at most `turns`); returns whether it held. */
async function turnsUntil(cond: () => boolean, turns = 100): Promise<boolean> {
  for (let i = 0; i < turns && !cond(); i++) await new Promise<void>((resolve) => setImmediate(resolve));
  return cond();
}

class MemoryBallot implements BallotStorage {
  value: string | undefined;
  read(): string | undefined {
    return this.value;
  }
  write(ballot: string): void {
    this.value = ballot;
  }
}

/** Nodes n0..n(k-1), each a PeerQuorum over in-memory marks, reaching each other unless down. */
function cluster(size: number, storageOf: Record<string, MarkStorage> = {}) {
  const down = new Set<string>();
  const nodes = new Map<
    string,
    { quorum: PeerQuorum; storage: MarkStorage; marks: HighWaterMarks; ballot: MemoryBallot }
  >();
  const members: PeerAddress[] = Array.from({ length: size }, (_, i) => ({
    nodeId: `n${i}`,
    advertise: `n${i}:1`,
  }));
  let ballots = 0;
  for (const m of members) {
    const storage = storageOf[m.nodeId] ?? new MemoryMarks();
    const marks = new HighWaterMarks(storage, () => undefined, { defer: (fn) => fn() });
    const ballot = new MemoryBallot();
    const port: PeerPort = {
      marks: async (peer: PeerAddress, b: string): Promise<PeerMarks | undefined> =>
        down.has(peer.nodeId) ? undefined : nodes.get(peer.nodeId)?.quorum.answerMarks(b),
      raise: async (peer: PeerAddress, b: string, mark: PeerMark): Promise<boolean> =>
        !down.has(peer.nodeId) && (nodes.get(peer.nodeId)?.quorum.answerRaise(b, mark) ?? false),
      heartbeat: async (peer: PeerAddress): Promise<boolean> => !down.has(peer.nodeId),
    };
    const quorum = new PeerQuorum({
      nodeId: m.nodeId,
      peers: port,
      members: () => members,
      clusterSize: size,
      marks,
      chains: [CHAIN],
      ballots: ballot,
      newBallot: () => `b${++ballots}`,
      deadlineMs: 50,
    });
    nodes.set(m.nodeId, { quorum, storage, marks, ballot });
  }
  const node = (id: string) => nodes.get(id)!;
  return { down, node };
}

describe('peer-wire', () => {
  it('round-trips every control request and a marks answer', () => {
    const mark = { chainId: CHAIN, ...hrs(7, 1, 3) };
    for (const req of [
      { kind: ControlKind.marks, ballot: 'abc' },
      { kind: ControlKind.heartbeat },
      { kind: ControlKind.raise, ballot: 'abc', mark },
    ] as const) {
      assert.deepEqual(parseControlRequest(encodeControlRequest(req)), req);
    }
    const answer = { nodeId: 'kms-1', marks: [mark, { chainId: 'other', ...hrs(1) }] };
    assert.deepEqual(decodeMarksAnswer(encodeMarksAnswer(answer)), answer);
  });

  it('rejects malformed bodies', () => {
    assert.equal(parseControlRequest(Uint8Array.of()), undefined);
    assert.equal(parseControlRequest(Uint8Array.of(9)), undefined);
    assert.equal(parseControlRequest(Uint8Array.of(ControlKind.heartbeat, 0)), undefined);
    const raise = encodeControlRequest({
      kind: ControlKind.raise,
      ballot: 'b',
      mark: { chainId: CHAIN, ...hrs(1) },
    });
    assert.equal(parseControlRequest(raise.subarray(0, raise.length - 1)), undefined);
    const answer = encodeMarksAnswer({ nodeId: 'n', marks: [{ chainId: CHAIN, ...hrs(1) }] });
    assert.throws(() => decodeMarksAnswer(answer.subarray(0, answer.length - 2)));
    assert.throws(() => decodeMarksAnswer(Uint8Array.of(2)));
  });
});

describe('PeerQuorum', () => {
  it('collect: a majority answers and the new leader raises its marks to the highest', async () => {
    const c = cluster(3);
    await c.node('n1').marks.raiseDurably(CHAIN, hrs(180));
    await c.node('n2').marks.raiseDurably(CHAIN, hrs(160));
    await c.node('n0').marks.raiseDurably(CHAIN, hrs(160));
    c.down.add('n2');
    assert.equal(await c.node('n0').quorum.collect(), true);
    assert.deepEqual(c.node('n0').storage.read(CHAIN), hrs(180));
    assert.equal(
      c.node('n1').ballot.value,
      c.node('n0').quorum.ballot,
      'the answering node promised the ballot',
    );
  });

  it('collect: no majority, no ballot', async () => {
    const c = cluster(3);
    c.down.add('n1');
    c.down.add('n2');
    assert.equal(await c.node('n0').quorum.collect(), false);
    assert.equal(c.node('n0').quorum.ballot, undefined);
  });

  it('confirm: a majority holds the HRS durably; without one it throws', async () => {
    const c = cluster(3);
    const q = c.node('n0').quorum;
    assert.equal(await q.collect(), true);
    await q.confirm(q.ballot!, CHAIN, hrs(10));
    const held = ['n0', 'n1', 'n2'].filter((id) => c.node(id).storage.read(CHAIN)?.height === 10n);
    assert.ok(held.length >= 2, `held by ${held.join(',')}`);
    c.down.add('n1');
    c.down.add('n2');
    const ballot = q.ballot!;
    await assert.rejects(q.confirm(ballot, CHAIN, hrs(11)), PeerQuorumError);
    assert.equal(q.ballot, undefined, 'the ballot is dropped: the next use collects again');
  });

  it('a node that promised another ballot refuses the old leader’s raise', async () => {
    const c = cluster(3);
    const a = c.node('n0').quorum;
    const b = c.node('n1').quorum;
    assert.equal(await a.collect(), true);
    const ballotA = a.ballot!;
    // n1 collects from n2 (n0 unreachable for it): n2 now promised n1's ballot.
    c.down.add('n0');
    assert.equal(await b.collect(), true);
    c.down.delete('n0');
    await assert.rejects(a.confirm(ballotA, CHAIN, hrs(5)), PeerQuorumError);
    assert.equal(c.node('n2').storage.read(CHAIN), undefined, 'n2 did not raise for the old ballot');
  });

  it('a leader that answered another ballot cannot count itself', async () => {
    const c = cluster(3);
    const a = c.node('n0').quorum;
    assert.equal(await a.collect(), true);
    const ballot = a.ballot!;
    c.node('n0').quorum.answerMarks('someone-else');
    await assert.rejects(a.confirm(ballot, CHAIN, hrs(5)), PeerQuorumError);
  });

  it('confirm refuses a state below this node’s mark', async () => {
    const c = cluster(3);
    const q = c.node('n0').quorum;
    await c.node('n1').marks.raiseDurably(CHAIN, hrs(50));
    assert.equal(await q.collect(), true);
    await assert.rejects(q.confirm(q.ballot!, CHAIN, hrs(40)), StateRegressionError);
  });

  /** A 3-node cluster whose n0 has collected and whose own mark writes can be held or failed. */
  async function leaderWithGatedMarks() {
    const own = new GatedMarkStorage();
    const c = cluster(3, { n0: own });
    const q = c.node('n0').quorum;
    assert.equal(await q.collect(), true);
    return { c, q, own };
  }

  it('confirm asks the others while its own mark is written, and resolves only once that is durable', async () => {
    const { c, q, own } = await leaderWithGatedMarks();
    own.held = true;
    let confirmed = false;
    const confirming = q.confirm(q.ballot!, CHAIN, hrs(7)).then(() => {
      confirmed = true;
    });
    const peersHold = () => ['n1', 'n2'].every((id) => c.node(id).storage.read(CHAIN)?.height === 7n);
    assert.ok(await turnsUntil(peersHold), 'the others raised while this node was still writing');
    assert.equal(confirmed, false, 'not confirmed before this node’s own mark is durable');
    assert.equal(own.read(CHAIN), undefined);
    own.release();
    await confirming;
    assert.deepEqual(own.read(CHAIN), hrs(7));
  });

  it('confirm fails when this node’s own mark cannot be written, whatever the others hold', async () => {
    const { q, own } = await leaderWithGatedMarks();
    own.failing = true;
    await assert.rejects(q.confirm(q.ballot!, CHAIN, hrs(8)), /the disk failed/);
    assert.equal(own.read(CHAIN), undefined);
    // Nothing was confirmed: once the disk is back, the same HRS is written and confirmed anew.
    own.failing = false;
    await q.confirm(q.ballot!, CHAIN, hrs(8));
    assert.deepEqual(own.read(CHAIN), hrs(8));
  });

  it('a single-node cluster needs nobody else', async () => {
    const c = cluster(1);
    const q = c.node('n0').quorum;
    assert.equal(await q.collect(), true);
    await q.confirm(q.ballot!, CHAIN, hrs(3));
    assert.deepEqual(c.node('n0').storage.read(CHAIN), hrs(3));
  });

  it('answers control requests from the wire', async () => {
    const c = cluster(3);
    const q = c.node('n0').quorum;
    await c.node('n0').marks.raiseDurably(CHAIN, hrs(9));
    const marks = await answerControl(q, encodeControlRequest({ kind: ControlKind.marks, ballot: 'x' }));
    assert.equal(marks.status, 'ok');
    assert.deepEqual(decodeMarksAnswer(marks.status === 'ok' ? marks.body : Uint8Array.of()), {
      nodeId: 'n0',
      marks: [{ chainId: CHAIN, ...hrs(9) }],
    });
    const raise = (ballot: string, chainId: string) =>
      answerControl(
        q,
        encodeControlRequest({ kind: ControlKind.raise, ballot, mark: { chainId, ...hrs(12) } }),
      );
    assert.deepEqual(
      await raise('y', CHAIN),
      { status: 'ok', body: Uint8Array.of(0) },
      'another ballot: refused',
    );
    assert.deepEqual(
      await raise('x', 'not-served'),
      { status: 'ok', body: Uint8Array.of(0) },
      'unknown chain: refused',
    );
    assert.deepEqual(await raise('x', CHAIN), { status: 'ok', body: Uint8Array.of(1) });
    assert.deepEqual(c.node('n0').storage.read(CHAIN), hrs(12));
    assert.deepEqual(await answerControl(q, Uint8Array.of(42)), { status: 'bad_request' });
  });
});

describe('PeerMarkedStore', () => {
  /** An inner store whose reservations always commit; counts instances (one per ballot). */
  function innerFactory() {
    const made: string[] = [];
    let state: SignState = freshSignState(0n);
    const factory = (): SignStateStore => {
      made.push('store');
      return {
        load: async () => state,
        reserve: async (_c: string, _e: SignState, next: SignState): Promise<ReserveResult> => {
          state = next;
          return { ok: true };
        },
        recordSignature: async () => undefined,
        readyToReturn: async () => undefined,
        close: async () => undefined,
      };
    };
    return { factory, made };
  }

  it('confirms a reservation with a majority before returning it, and re-reads after a new ballot', async () => {
    const c = cluster(3);
    const inner = innerFactory();
    const store = new PeerMarkedStore(c.node('n0').quorum, inner.factory);
    assert.equal(await store.collect(), true);
    await store.load(CHAIN);
    const next = { ...freshSignState(4n), signBytes: Uint8Array.of(1) };
    assert.deepEqual(await store.reserve(CHAIN, freshSignState(0n), next), { ok: true });
    assert.equal(c.node('n1').storage.read(CHAIN)?.height ?? c.node('n2').storage.read(CHAIN)?.height, 4n);
    c.down.add('n1');
    c.down.add('n2');
    const later = { ...freshSignState(5n), signBytes: Uint8Array.of(2) };
    await assert.rejects(store.reserve(CHAIN, next, later), PeerQuorumError);
    c.down.delete('n1');
    await store.load(CHAIN);
    assert.equal(inner.made.length, 2, 'a new ballot reads through a new inner store (empty cache)');
  });
});

describe('FileBallotStorage', () => {
  const homes: string[] = [];
  after(() => {
    for (const h of homes) rmSync(h, { recursive: true, force: true });
  });

  it('keeps the promise across instances (a restart)', () => {
    const home = mkdtempSync(join(tmpdir(), 'cometkms-ballot-'));
    homes.push(home);
    mkdirSync(join(home, 'state'));
    assert.equal(new FileBallotStorage(home).read(), undefined);
    new FileBallotStorage(home).write('ballot-1');
    assert.equal(new FileBallotStorage(home).read(), 'ballot-1');
    assert.equal(readFileSync(join(home, 'state', 'peer-ballot'), 'utf8'), 'ballot-1\n');
  });
});
