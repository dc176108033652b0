import { bytesEqual } from '../cometbft/bytes.ts';
import { compareHRS, type HRS } from '../cometbft/types.ts';

/**
 * The last reserved (and possibly signed) state of one chain. A reservation exists before any
 * signature: `signBytes` set and `signature` empty means "reserved, not yet (known to be) signed".
 */
export interface SignState extends HRS {
  /** the exact sign bytes reserved at this HRS; empty only for the initial state */
  signBytes: Uint8Array;
  /** vote-extension sign bytes reserved with a non-nil precommit (v0.38+); else empty */
  extensionSignBytes: Uint8Array;
  /** the signature over `signBytes` once recorded; empty until then */
  signature: Uint8Array;
}

/**
 * The state `cometkms state init --height H` creates for a key that has never signed on a chain:
 * height H, round 0, step 0, no sign bytes. It is created only by that command: a store never
 * makes it up for a chain whose state it cannot find (ARCHITECTURE §2 invariant 7).
 */
export function freshSignState(height = 0n): SignState {
  return {
    height,
    round: 0,
    step: 0,
    signBytes: new Uint8Array(),
    extensionSignBytes: new Uint8Array(),
    signature: new Uint8Array(),
  };
}

/** A deep copy (stores hand out copies so callers cannot change what they hold). */
export function copySignState(s: SignState): SignState {
  return {
    height: s.height,
    round: s.round,
    step: s.step,
    signBytes: s.signBytes.slice(),
    extensionSignBytes: s.extensionSignBytes.slice(),
    signature: s.signature.slice(),
  };
}

/** Whether two states are equal in every field (what a compare-and-set compares). */
export function sameSignState(a: SignState, b: SignState): boolean {
  return (
    compareHRS(a, b) === 0 &&
    bytesEqual(a.signBytes, b.signBytes) &&
    bytesEqual(a.extensionSignBytes, b.extensionSignBytes) &&
    bytesEqual(a.signature, b.signature)
  );
}

/** Outcome of a compare-and-set reservation. */
export type ReserveResult =
  | { ok: true }
  /** `current` changed under us (another writer, or a lost reply): decide again against it */
  | { ok: false; current: SignState };

/** What a signature record refers to: the reservation (HRS and exact sign bytes) it signs. */
export interface Reservation extends HRS {
  signBytes: Uint8Array;
}

/**
 * Durable sign state, one record per chain id. Implementations: file (single node) and etcd
 * (cluster). `load` and `reserve` either complete durably or throw; a throw means "unknown", and
 * the guard then refuses to sign. The errors of store/errors.ts say why a state is unusable.
 */
export interface SignStateStore {
  /**
   * The current state of `chainId`, or `undefined` when the chain has none: a missing state is
   * never read as an empty one. Throws StateStoreError (or a subclass) for an unusable state.
   */
  load(chainId: string): Promise<SignState | undefined>;
  /**
   * Durably replaces `expected` by `next` if and only if the stored state still equals
   * `expected` (and, in cluster mode, this node still holds the leadership it won). `next` has
   * an empty signature. Must be durable before it resolves `{ok: true}`.
   */
  reserve(chainId: string, expected: SignState, next: SignState): Promise<ReserveResult>;
  /**
   * Records `signature` for `reserved` (a no-op if the state has moved on since). With
   * `durable: false` it may only be kept for the chain's next write: failing to record, or losing
   * the record in a crash, never allows a second, different signature — the reservation alone
   * blocks that, and the guard re-signs the reserved bytes when it finds none (ed25519 is
   * deterministic: the same signature again). With `durable: true` it resolves only once the
   * record is as durable as a reservation: that is how a secp256k1 retry gets the very same
   * signature back (ECDSA from an HSM is randomised, and peers drop a second, different
   * signature for one vote).
   */
  recordSignature(
    chainId: string,
    reserved: Reservation,
    signature: Uint8Array,
    opts: { durable: boolean },
  ): Promise<void>;
  /**
   * Resolves once everything that must be durable before a signature over `reserved` (the
   * chain's reservation the guard holds) may be returned is durable; throws when that cannot be
   * made so, and the signature must then not be returned. The reservation itself is durable
   * before `reserve` resolves (reserve before sign); this covers what a store writes beside it
   * and may overlap with the signing: the file store's seal (store/file.ts). A store with nothing
   * of the kind (etcd: the high-water mark is raised inside `reserve`) resolves at once.
   */
  readyToReturn(chainId: string, reserved: Reservation): Promise<void>;
  /** Releases locks, leases and handles. */
  close(): Promise<void>;
}
