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

/** The state of a chain nothing was ever signed for. */
export function initialSignState(): SignState {
  return {
    height: 0n,
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

/**
 * Durable sign state, one record per chain id. Implementations: file (single node) and etcd
 * (cluster). `load` and `reserve` either complete durably or throw; a throw means "unknown", and
 * the guard then refuses to sign.
 */
export interface SignStateStore {
  /** The current state of `chainId` (the initial state if none exists yet). */
  load(chainId: string): Promise<SignState>;
  /**
   * Durably replaces `expected` by `next` if and only if the stored state still equals
   * `expected` (and, in cluster mode, this node still holds the leadership it won). `next` has
   * an empty signature. Must be durable before it resolves `{ok: true}`.
   */
  reserve(chainId: string, expected: SignState, next: SignState): Promise<ReserveResult>;
  /**
   * Records the signature of the reservation at `hrs` whose sign bytes are `signBytes`. A no-op if
   * the state has moved on since. Unlike `reserve`, it need not be durable when it resolves
   * (the file store writes it with the next reservation): failing to record, or losing the
   * record in a crash, never allows a second, different signature — the reservation alone
   * already blocks that, and the guard re-signs the reserved bytes when it finds none.
   */
  recordSignature(chainId: string, hrs: HRS, signBytes: Uint8Array, signature: Uint8Array): Promise<void>;
  /** Releases locks, leases and handles. */
  close(): Promise<void>;
}
