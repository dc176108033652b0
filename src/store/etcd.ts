import { performance } from 'node:perf_hooks';
import { bytesEqual } from '../cometbft/bytes.ts';
import { compareHRS } from '../cometbft/types.ts';
import type { EtcdCompare, EtcdKv, EtcdPort } from '../ports/etcd.ts';
import { type EtcdClientLike, toEtcdPort } from '../ports/etcd3.ts';
import { NotLeaderError, StateMissingError, StateRegressionError, stateRemedy } from './errors.ts';
import { type BatchWrite, EtcdWriteBatcher } from './etcd-batch.ts';
import type { HighWaterMarks } from './high-water.ts';
import { formatHrs } from './state-codec.ts';
import {
  copySignState,
  type Reservation,
  type ReserveResult,
  type SignState,
  type SignStateStore,
  sameSignState,
} from './types.ts';

/**
 * Proof of leadership used to fence every write: the leader key must still carry this exact value,
 * be bound to this lease and have been created at this revision (the term this node won).
 * Lease ids and revisions are int64 and exceed 2^53, so they stay strings.
 */
export interface FencingToken {
  leaseId: string;
  createRevision: string;
  /** the exact value this node wrote to the leader key */
  leaderValue: string;
}

/** What the store needs from leadership (implemented by `Leadership` in src/cluster). */
export interface LeadershipFence {
  /** the current token; undefined while not leader */
  readonly token: FencingToken | undefined;
  /** a fenced write failed on leadership: drop `token`'s leadership (no-op if it is already gone) */
  stepDown(reason: string, token: FencingToken): void;
}

/** The etcd keys CometKMS uses under a prefix. */
export const etcdKeys = {
  leader: (prefix: string): string => `${prefix}leader`,
  /** the "preferred next leader" hint written by a leadership transfer */
  preferred: (prefix: string): string => `${prefix}preferred`,
  state: (prefix: string, chainId: string): string => `${prefix}state/${chainId}`,
};

/** The compares that make a transaction succeed only while `token` is still the leadership. */
export function fencingCompares(leaderKey: string, token: FencingToken): EtcdCompare[] {
  return [
    { key: leaderKey, target: 'value', value: Buffer.from(token.leaderValue) },
    { key: leaderKey, target: 'create', revision: token.createRevision },
    { key: leaderKey, target: 'lease', lease: token.leaseId },
  ];
}

/** Whether `kv` (the leader key as read) still matches `token`. */
export function leaderKeyMatches(kv: EtcdKv | undefined, token: FencingToken): boolean {
  return (
    kv !== undefined &&
    kv.value.toString() === token.leaderValue &&
    kv.createRevision === token.createRevision &&
    kv.lease === token.leaseId
  );
}

/** JSON form of a SignState in etcd: the height as a decimal string, bytes as hex. */
export function encodeSignState(s: SignState): Buffer {
  return Buffer.from(
    JSON.stringify({
      height: s.height.toString(),
      round: s.round,
      step: s.step,
      sign_bytes: Buffer.from(s.signBytes).toString('hex'),
      extension_sign_bytes: Buffer.from(s.extensionSignBytes).toString('hex'),
      signature: Buffer.from(s.signature).toString('hex'),
    }),
  );
}

/** Parses `encodeSignState` output; throws on anything else (unreadable state = do not sign). */
export function decodeSignState(raw: Buffer, where: string): SignState {
  const bad = (why: string): never => {
    throw new Error(`etcd sign state at ${where} is invalid: ${why}`);
  };
  let v: unknown;
  try {
    v = JSON.parse(raw.toString('utf8'));
  } catch {
    return bad('not JSON');
  }
  if (typeof v !== 'object' || v === null) return bad('not an object');
  const o = v as Record<string, unknown>;
  const hex = (k: string): Uint8Array => {
    const x = o[k];
    if (typeof x !== 'string' || !/^(?:[0-9a-f]{2})*$/.test(x)) return bad(`${k} is not hex`);
    return new Uint8Array(Buffer.from(x, 'hex'));
  };
  const int = (k: string, max: number): number => {
    const x = o[k];
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > max) return bad(`${k} out of range`);
    return x;
  };
  if (typeof o['height'] !== 'string' || !/^(?:0|[1-9][0-9]{0,18})$/.test(o['height'])) {
    return bad('height is not a decimal string');
  }
  return {
    height: BigInt(o['height']),
    round: int('round', 2 ** 31 - 1),
    step: int('step', 3),
    signBytes: hex('sign_bytes'),
    extensionSignBytes: hex('extension_sign_bytes'),
    signature: hex('signature'),
  };
}

/**
 * Told about every etcd call a component makes, for metrics: the operation, how long it took
 * and whether it answered (a compare that failed is an answer; a timeout or error is not).
 */
export type EtcdCallObserver = (op: string, ms: number, ok: boolean) => void;

/** Runs `call`, reporting its duration and outcome to `observer` (if any); returns its result. */
export async function observeEtcdCall<T>(
  observer: EtcdCallObserver | undefined,
  op: string,
  call: () => Promise<T>,
): Promise<T> {
  if (observer === undefined) return await call();
  const started = performance.now();
  try {
    const result = await call();
    observer(op, performance.now() - started, true);
    return result;
  } catch (err) {
    observer(op, performance.now() - started, false);
    throw err;
  }
}

/** The state key of a chain as read by an operator command: its raw value and mod revision. */
export interface EtcdStateRecord {
  /** the key, for messages */
  key: string;
  value: Buffer;
  /** int64 as a string (see FencingToken) */
  modRevision: string;
}

/** Linearizable read of the state key of `chainId`; undefined when it does not exist (yet). */
export async function readEtcdStateRecord(
  client: EtcdClientLike,
  prefix: string,
  chainId: string,
): Promise<EtcdStateRecord | undefined> {
  const key = etcdKeys.state(prefix, chainId);
  const kv = await toEtcdPort(client).get(key);
  if (kv === undefined) return undefined;
  return { key, value: kv.value, modRevision: kv.modRevision };
}

/**
 * Writes `next` to the state key of `chainId` in ONE compare-and-swap transaction: only if the
 * key still has `expected`'s mod revision, or, with `expected` undefined, does not exist yet
 * (create-if-absent). Returns false (and writes nothing) if anything wrote the key since it was
 * read.
 *
 * This is how an operator creates or seeds the state (`cometkms state init|import`), with nodes
 * running or not; nothing else ever creates a state key. It needs no leadership: a leader's next
 * fenced reservation compares the state key's mod revision it last saw, so it fails, re-reads,
 * and continues from the written state (refusing anything below what it saw). Whether `next`
 * may replace the state read is the caller's decision.
 */
export async function swapEtcdSignState(
  client: EtcdClientLike,
  prefix: string,
  chainId: string,
  expected: EtcdStateRecord | undefined,
  next: SignState,
): Promise<boolean> {
  const key = etcdKeys.state(prefix, chainId);
  const compare: EtcdCompare =
    expected === undefined
      ? { key, target: 'create', revision: '0' }
      : { key, target: 'mod', revision: expected.modRevision };
  const res = await toEtcdPort(client).txn({
    compare: [compare],
    success: [{ op: 'put', key, value: encodeSignState(next) }],
    failure: [],
  });
  return res.succeeded;
}

/** The state key as last read or written by this process. */
interface Cached {
  state: SignState;
  /** mod revision of the state key holding `state`: the reservation compares it */
  modRevision: string;
}

/**
 * Protections the deterministic simulator can switch off, one at a time, to prove that its
 * checker notices (`npm run sim -- --plant-bug NAME`). Nothing in the product sets them: only the
 * simulator's node builder passes this option.
 */
export interface StorePlantedBugs {
  /** reservations leave out the leader-key compares (the fencing token) */
  noFence?: boolean;
  /** reservations leave out the state key's mod-revision compare */
  noStateCompare?: boolean;
  /** states read from etcd are not checked against (nor raise) the high-water marks */
  noHighWater?: boolean;
  /** a batched transaction carries only its first chain's state compare (see etcd-batch.ts) */
  batchOneStateCompare?: boolean;
}

export interface EtcdSignStateStoreOptions {
  /** the etcd client, or a port (the simulator's etcd model) */
  client: EtcdClientLike;
  /** key prefix, e.g. "cometkms/" */
  prefix: string;
  leadership: LeadershipFence;
  /** this node's durable high-water marks (in its home) */
  marks: HighWaterMarks;
  /** told about every etcd call (ops `state_read`, `reserve`, `record`), e.g. for metrics */
  observer?: EtcdCallObserver;
  /**
   * The caller makes this node's mark durable before anything is signed, together with the other
   * nodes' marks (PeerMarkedStore: PeerQuorum.confirm of every state this store returns). A
   * committed reservation then starts its mark's write and resolves without waiting for it, so
   * that the write overlaps the peers' round trip instead of preceding it. Default false: the
   * mark is durable when `reserve` resolves.
   */
  markConfirmedByCaller?: boolean;
  /** simulator only: see {@link StorePlantedBugs} */
  plantedBugs?: StorePlantedBugs;
}

/**
 * The cluster sign-state store: one etcd key per chain, written only by fenced transactions.
 *
 * Safety (ARCHITECTURE.md §2): a reservation is ONE transaction that succeeds only if the leader
 * key still carries this node's value, lease and create revision, and the state key is unchanged
 * since this process last read or wrote it. A paused or partitioned former leader therefore cannot
 * write, whatever it believes. etcd's reply to a successful transaction means the write is
 * committed by a quorum (and fsynced by each of its members), so `{ok: true}` is durable.
 *
 * The store never creates a state key (invariant 7): a missing key is a chain without state,
 * until an operator runs `state init|import`. Every state read from etcd is checked against this
 * node's durable high-water mark (high-water.ts) and raises it: a state below the mark, or a
 * missing key once the node has seen one, is a StateRegressionError, never a new baseline. That
 * catches what no transaction can: a wiped etcd, a restored older snapshot, a wrong prefix, a
 * forced import of a lower state. The mark is raised durably after each committed reservation
 * and before `reserve` resolves (with `markConfirmedByCaller`: before the caller hands the
 * reservation to the guard), so no signature can exist above this node's mark on disk.
 *
 * The hot path is one etcd round trip: the state key's mod revision is cached from the last read
 * or successful transaction. Does not own `client`: `close()` leaves it open.
 */
export class EtcdSignStateStore implements SignStateStore {
  readonly #client: EtcdPort;
  readonly #prefix: string;
  readonly #leadership: LeadershipFence;
  readonly #marks: HighWaterMarks;
  readonly #observer: EtcdCallObserver | undefined;
  readonly #bugs: StorePlantedBugs;
  readonly #markConfirmedByCaller: boolean;
  readonly #cache = new Map<string, Cached>();
  readonly #batcher: EtcdWriteBatcher;

  constructor(opts: EtcdSignStateStoreOptions) {
    this.#client = toEtcdPort(opts.client);
    this.#bugs = opts.plantedBugs ?? {};
    this.#markConfirmedByCaller = opts.markConfirmedByCaller === true;
    this.#batcher = new EtcdWriteBatcher({
      client: this.#client,
      // One observation per transaction, however many chains' writes it carries.
      run: (op, txn) => observeEtcdCall(opts.observer, op, txn),
      plantedBugs: {
        noStateCompare: this.#bugs.noStateCompare === true,
        oneStateCompare: this.#bugs.batchOneStateCompare === true,
      },
    });
    this.#prefix = opts.prefix;
    this.#leadership = opts.leadership;
    this.#marks = opts.marks;
    this.#observer = opts.observer;
  }

  async load(chainId: string): Promise<SignState | undefined> {
    const cached = await this.#read(chainId);
    return cached === undefined ? undefined : copySignState(cached.state);
  }

  async reserve(chainId: string, expected: SignState, next: SignState): Promise<ReserveResult> {
    if (compareHRS(next, expected) < 0) {
      throw new StateRegressionError(
        `refusing to reserve ${formatHrs(next)} below the current state ${formatHrs(expected)}`,
      );
    }
    const token = this.#requireToken();
    let cached = this.#cache.get(chainId);
    if (cached === undefined || !sameSignState(cached.state, expected)) {
      // Our view is not what the caller decided against: read etcd before comparing anything.
      cached = await this.#read(chainId);
      if (cached === undefined) throw this.#missing(chainId);
      if (!sameSignState(cached.state, expected)) return { ok: false, current: copySignState(cached.state) };
    }
    const res = await this.#fencedPut(chainId, token, cached.modRevision, next, 'reserve');
    return res.ok ? res : { ok: false, current: copySignState(res.current.state) };
  }

  /**
   * Records `signature` for `reserved`. Not durable (ed25519): kept with this leader's cached
   * state only; the reservation of exactly these sign bytes is already committed by a quorum, so
   * no other bytes can be signed at this HRS by any node, and a new leader that finds the
   * reservation without a signature re-signs the same bytes (deterministic). Skipping the write
   * saves a quorum round trip per signature. Durable (secp256k1): one more fenced transaction
   * writes the state with its signature, so that any leader returns this very signature again.
   */
  async recordSignature(
    chainId: string,
    reserved: Reservation,
    signature: Uint8Array,
    opts: { durable: boolean },
  ): Promise<void> {
    const cached = this.#cache.get(chainId);
    if (cached === undefined) return;
    const state = cached.state;
    if (compareHRS(state, reserved) !== 0 || !bytesEqual(state.signBytes, reserved.signBytes)) return;
    const signed = { ...state, signature: signature.slice() };
    if (!opts.durable) {
      // Same mod revision: etcd's value differs only in the signature, which compares ignore.
      this.#cache.set(chainId, { ...cached, state: signed });
      return;
    }
    // A conflict means the state moved on (a later reservation or an import): this record no
    // longer matters. Leadership lost throws.
    await this.#fencedPut(chainId, this.#requireToken(), cached.modRevision, signed, 'record');
  }

  /** The high-water mark is raised durably inside `reserve`, before it resolves: nothing to wait for. */
  async readyToReturn(): Promise<void> {}

  async close(): Promise<void> {
    this.#cache.clear();
  }

  #requireToken(): FencingToken {
    const token = this.#leadership.token;
    if (token === undefined) throw new NotLeaderError('this node is not the cluster leader');
    return token;
  }

  /**
   * One fenced transaction (shared with other chains' writes by the batcher): fences + this
   * chain's state unchanged → put `next`; else the state as read in the same transaction, or
   * leadership lost (step down and throw NotLeaderError).
   */
  async #fencedPut(
    chainId: string,
    token: FencingToken,
    modRevision: string,
    next: SignState,
    op: BatchWrite['op'],
  ): Promise<{ ok: true } | { ok: false; current: Cached }> {
    const leaderKey = etcdKeys.leader(this.#prefix);
    const stateKey = etcdKeys.state(this.#prefix, chainId);
    const outcome = await this.#batcher.submit({
      chainId,
      stateKey,
      modRevision,
      value: encodeSignState(next),
      op,
      fence: {
        leaderKey,
        compares: this.#bugs.noFence ? [] : fencingCompares(leaderKey, token),
        id: `${token.createRevision}|${token.leaseId}|${token.leaderValue}`,
        matches: (kv) => this.#bugs.noFence === true || leaderKeyMatches(kv, token),
      },
    });
    switch (outcome.kind) {
      case 'committed':
        // Committed at the transaction's revision. The mark goes up before anyone signs it: here,
        // or in the caller's confirm, which joins this write (raiseDurably never writes a chain
        // twice at once) and fails if it fails.
        if (!this.#bugs.noHighWater) {
          const raised = this.#marks.raiseDurably(chainId, next);
          if (this.#markConfirmedByCaller) raised.catch(() => undefined);
          else await raised;
        }
        this.#cache.set(chainId, { state: copySignState(next), modRevision: outcome.revision });
        return { ok: true };
      case 'not_leader':
        this.#leadership.stepDown('a fenced transaction found the leader key changed', token);
        throw new NotLeaderError(
          'leadership lost: the leader key no longer carries this node’s fencing token',
        );
      case 'conflict':
        if (outcome.current === undefined) {
          this.#cache.delete(chainId);
          throw this.#missing(chainId);
        }
        return { ok: false, current: await this.#accept(chainId, outcome.current) };
    }
  }

  /** Linearizable read of the state key; undefined when the chain has no state (and never had, here). */
  async #read(chainId: string): Promise<Cached | undefined> {
    const key = etcdKeys.state(this.#prefix, chainId);
    const kv = await observeEtcdCall(this.#observer, 'state_read', () => this.#client.get(key));
    if (kv === undefined) {
      this.#cache.delete(chainId);
      if (!this.#bugs.noHighWater && this.#marks.get(chainId) !== undefined) throw this.#missing(chainId);
      return undefined;
    }
    return this.#accept(chainId, kv);
  }

  /** Checks a state read from etcd against this node's mark, raises the mark, caches it. */
  async #accept(chainId: string, kv: EtcdKv): Promise<Cached> {
    const state = decodeSignState(kv.value, kv.key);
    if (this.#bugs.noHighWater) {
      const cached = { state, modRevision: kv.modRevision };
      this.#cache.set(chainId, cached);
      return cached;
    }
    const mark = this.#marks.get(chainId);
    if (mark !== undefined && compareHRS(state, mark) < 0) {
      this.#cache.delete(chainId);
      throw new StateRegressionError(
        `etcd sign state of chain ${JSON.stringify(chainId)} (key ${kv.key}) is at ${formatHrs(state)}, ` +
          `below ${formatHrs(mark)} that this node has seen: etcd lost data (wiped, restored from an older ` +
          'snapshot), the etcd_prefix is wrong, or a lower state was forced in. Not signing this chain. If the ' +
          `state is lower on purpose, run cometkms state reset-high-water on each node (stopped); otherwise ` +
          `import the last signed state (at or above ${formatHrs(mark)}) with cometkms state import`,
      );
    }
    await this.#marks.raiseDurably(chainId, state);
    const cached = { state, modRevision: kv.modRevision };
    this.#cache.set(chainId, cached);
    return cached;
  }

  /** The error for a chain with no state key: lost (this node saw one) or never created. */
  #missing(chainId: string): StateMissingError | StateRegressionError {
    const key = etcdKeys.state(this.#prefix, chainId);
    const mark = this.#marks.get(chainId);
    if (mark === undefined) {
      return new StateMissingError(
        `etcd has no sign state for chain ${JSON.stringify(chainId)} (key ${key}): ${stateRemedy(chainId)}`,
      );
    }
    return new StateRegressionError(
      `etcd has no sign state for chain ${JSON.stringify(chainId)} (key ${key}), but this node has seen it at ` +
        `${formatHrs(mark)}: etcd lost data (wiped, restored from an older snapshot) or the etcd_prefix is ` +
        `wrong. Not signing this chain. Import the last signed state (at or above ${formatHrs(mark)}) with ` +
        'cometkms state import',
    );
  }
}
