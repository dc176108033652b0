import { performance } from 'node:perf_hooks';
import type { Etcd3, ICompare, IKeyValue, IRangeResponse, ITxnResponse } from 'etcd3';
import { compareHRS, type HRS } from '../cometbft/types.ts';
import {
  copySignState,
  initialSignState,
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

/** This node does not (or no longer) hold the leadership the write was fenced with. */
export class NotLeaderError extends Error {
  override readonly name = 'NotLeaderError';
}

/** etcd returned a state lower than one this process already saw (restored backup, wrong prefix). */
export class StateRegressionError extends Error {
  override readonly name = 'StateRegressionError';
}

/** The etcd keys CometKMS uses under a prefix. */
export const etcdKeys = {
  leader: (prefix: string): Buffer => Buffer.from(`${prefix}leader`),
  /** the "preferred next leader" hint written by a leadership transfer */
  preferred: (prefix: string): Buffer => Buffer.from(`${prefix}preferred`),
  state: (prefix: string, chainId: string): Buffer => Buffer.from(`${prefix}state/${chainId}`),
};

/** The compares that make a transaction succeed only while `token` is still the leadership. */
export function fencingCompares(leaderKey: Buffer, token: FencingToken): ICompare[] {
  return [
    { key: leaderKey, target: 'Value', result: 'Equal', value: Buffer.from(token.leaderValue) },
    { key: leaderKey, target: 'Create', result: 'Equal', create_revision: token.createRevision },
    { key: leaderKey, target: 'Lease', result: 'Equal', lease: token.leaseId },
  ];
}

/** Whether `kv` (the leader key as read) still matches `token`. */
export function leaderKeyMatches(kv: IKeyValue | undefined, token: FencingToken): boolean {
  return (
    kv !== undefined &&
    kv.value.toString() === token.leaderValue &&
    kv.create_revision === token.createRevision &&
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
  client: Etcd3,
  prefix: string,
  chainId: string,
): Promise<EtcdStateRecord | undefined> {
  const key = etcdKeys.state(prefix, chainId);
  const res = await client.kv.range({ key });
  const kv = res.kvs[0];
  if (kv === undefined) return undefined;
  return { key: key.toString(), value: kv.value, modRevision: kv.mod_revision };
}

/**
 * Writes `next` to the state key of `chainId` in ONE compare-and-swap transaction: only if the
 * key still has `expected`'s mod revision, or, with `expected` undefined, does not exist yet.
 * Returns false (and writes nothing) if anything wrote the key since it was read.
 *
 * This is how an operator seeds the state (`cometkms state import`), with nodes running or not.
 * It needs no leadership: a leader's next fenced reservation compares the state key's mod
 * revision it last saw, so it fails, re-reads, and continues from the written state (refusing
 * anything below it). Whether `next` may replace the state read is the caller's decision.
 */
export async function swapEtcdSignState(
  client: Etcd3,
  prefix: string,
  chainId: string,
  expected: EtcdStateRecord | undefined,
  next: SignState,
): Promise<boolean> {
  const key = etcdKeys.state(prefix, chainId);
  const compare: ICompare =
    expected === undefined
      ? { key, target: 'Create', result: 'Equal', create_revision: 0 }
      : { key, target: 'Mod', result: 'Equal', mod_revision: expected.modRevision };
  const res = await client.kv.txn({
    compare: [compare],
    success: [{ request_put: { key, value: encodeSignState(next) } }],
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

export interface EtcdSignStateStoreOptions {
  client: Etcd3;
  /** key prefix, e.g. "cometkms/" */
  prefix: string;
  leadership: LeadershipFence;
  /** told about every etcd call (ops `state_read` and `reserve`), e.g. for metrics */
  observer?: EtcdCallObserver;
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
 * The hot path is one round trip: the state key's mod revision is cached from the last read or
 * successful transaction. Every state seen is checked never to go below the highest state this
 * process saw before (invariant 3). Does not own `client`: `close()` leaves it open.
 */
export class EtcdSignStateStore implements SignStateStore {
  readonly #client: Etcd3;
  readonly #prefix: string;
  readonly #leadership: LeadershipFence;
  readonly #observer: EtcdCallObserver | undefined;
  readonly #cache = new Map<string, Cached>();
  /** the highest HRS seen per chain; never decreases */
  readonly #highest = new Map<string, HRS>();

  constructor(opts: EtcdSignStateStoreOptions) {
    this.#client = opts.client;
    this.#prefix = opts.prefix;
    this.#leadership = opts.leadership;
    this.#observer = opts.observer;
  }

  async load(chainId: string): Promise<SignState> {
    return copySignState((await this.#read(chainId)).state);
  }

  async reserve(chainId: string, expected: SignState, next: SignState): Promise<ReserveResult> {
    if (compareHRS(next, expected) < 0) {
      throw new StateRegressionError(
        `refusing to reserve ${next.height}/${next.round}/${next.step} below the current state`,
      );
    }
    const token = this.#requireToken();
    let cached = this.#cache.get(chainId);
    if (cached === undefined || !sameSignState(cached.state, expected)) {
      // Our view is not what the caller decided against: read etcd before comparing anything.
      cached = await this.#read(chainId);
      if (!sameSignState(cached.state, expected)) return { ok: false, current: copySignState(cached.state) };
    }
    const res = await this.#fencedPut(chainId, token, cached.modRevision, next);
    if (res.succeeded) return { ok: true };
    const current = this.#afterFailure(chainId, token, res);
    return { ok: false, current: copySignState(current.state) };
  }

  /**
   * Keeps the signature with this leader's cached state; it is not written to etcd. Recording is
   * bookkeeping, not protection: the reservation of exactly these sign bytes is already
   * committed by a quorum, so no other bytes can be signed at this HRS by any node. A same-HRS
   * retry served by this leader gets the kept signature back; after a failover the new leader
   * finds the reservation without one and re-signs the reserved bytes (deterministic for
   * ed25519; a second ECDSA signature over identical bytes is not equivocation). Skipping the
   * write saves a quorum round trip per signature on the hot path.
   */
  async recordSignature(
    chainId: string,
    hrs: HRS,
    signBytes: Uint8Array,
    signature: Uint8Array,
  ): Promise<void> {
    const cached = this.#cache.get(chainId);
    if (cached === undefined) return;
    if (compareHRS(cached.state, hrs) !== 0 || !Buffer.from(cached.state.signBytes).equals(signBytes)) return;
    // Same mod revision: etcd's value differs only in the signature, which compares ignore.
    this.#cache.set(chainId, { ...cached, state: { ...cached.state, signature: signature.slice() } });
  }

  async close(): Promise<void> {
    this.#cache.clear();
  }

  #requireToken(): FencingToken {
    const token = this.#leadership.token;
    if (token === undefined) throw new NotLeaderError('this node is not the cluster leader');
    return token;
  }

  /** One transaction: fences + state unchanged → put `next`; else read the leader and state keys. */
  async #fencedPut(chainId: string, token: FencingToken, modRevision: string, next: SignState) {
    const leaderKey = etcdKeys.leader(this.#prefix);
    const stateKey = etcdKeys.state(this.#prefix, chainId);
    const res: ITxnResponse = await observeEtcdCall(this.#observer, 'reserve', () =>
      this.#client.kv.txn({
        compare: [
          ...fencingCompares(leaderKey, token),
          { key: stateKey, target: 'Mod', result: 'Equal', mod_revision: modRevision },
        ],
        success: [{ request_put: { key: stateKey, value: encodeSignState(next) } }],
        failure: [{ request_range: { key: leaderKey } }, { request_range: { key: stateKey } }],
      }),
    );
    if (res.succeeded) {
      // the put happened at the transaction's revision
      this.#remember(chainId, { state: copySignState(next), modRevision: res.header.revision });
    }
    return res;
  }

  /** Interprets a failed fenced transaction: leadership lost → step down and throw; else the new state. */
  #afterFailure(chainId: string, token: FencingToken, res: ITxnResponse): Cached {
    const [leader, state] = res.responses.map(
      (r) => (r.response_range as IRangeResponse | undefined)?.kvs[0],
    );
    if (!leaderKeyMatches(leader, token)) {
      this.#leadership.stepDown('a fenced transaction found the leader key changed', token);
      throw new NotLeaderError('leadership lost: the leader key no longer carries this node’s fencing token');
    }
    if (state === undefined) {
      this.#cache.delete(chainId);
      throw new StateRegressionError(`etcd sign state of ${chainId} disappeared`);
    }
    return this.#accept(chainId, state);
  }

  /** Linearizable read of the state key; creates it (with the initial state) if missing. */
  async #read(chainId: string): Promise<Cached> {
    const key = etcdKeys.state(this.#prefix, chainId);
    // Compares on a missing key always fail, so the key must exist before the first reservation.
    // Creating it is guarded by "does not exist yet", so it can never overwrite a state.
    const res = await observeEtcdCall(this.#observer, 'state_read', () =>
      this.#client.kv.txn({
        compare: [{ key, target: 'Create', result: 'Equal', create_revision: 0 }],
        success: [{ request_put: { key, value: encodeSignState(initialSignState()) } }],
        failure: [{ request_range: { key } }],
      }),
    );
    if (res.succeeded) {
      const initial = { state: initialSignState(), modRevision: res.header.revision };
      this.#checkForward(chainId, initial.state);
      this.#remember(chainId, initial);
      return initial;
    }
    const kv = (res.responses[0]?.response_range as IRangeResponse | undefined)?.kvs[0];
    if (kv === undefined) throw new Error(`etcd returned no sign state for ${chainId}`);
    return this.#accept(chainId, kv);
  }

  #accept(chainId: string, kv: IKeyValue): Cached {
    const cached = { state: decodeSignState(kv.value, kv.key.toString()), modRevision: kv.mod_revision };
    this.#checkForward(chainId, cached.state);
    this.#remember(chainId, cached);
    return cached;
  }

  /** Invariant 3: a state below one already seen is an error, never a new baseline. */
  #checkForward(chainId: string, s: SignState): void {
    const highest = this.#highest.get(chainId);
    if (highest !== undefined && compareHRS(s, highest) < 0) {
      throw new StateRegressionError(
        `etcd sign state of ${chainId} went backwards: ${s.height}/${s.round}/${s.step} is below ` +
          `${highest.height}/${highest.round}/${highest.step} seen before; refusing to sign`,
      );
    }
  }

  #remember(chainId: string, c: Cached): void {
    this.#checkForward(chainId, c.state);
    this.#cache.set(chainId, c);
    this.#highest.set(chainId, { height: c.state.height, round: c.state.round, step: c.state.step });
  }
}
