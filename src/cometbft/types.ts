/**
 * The CometBFT data model as CometKMS sees it: the privval messages and the types they carry,
 * for the wire families v0.34/v0.37, v0.38 and v1.0.
 *
 * int64 fields (heights, timestamp seconds) are `bigint` so that no value is ever rounded;
 * int32 fields (rounds, indexes, nanos) are `number`. Byte fields are `Uint8Array`, and an
 * empty array means "absent" exactly as proto3 does.
 */

/** A privval wire family. v0.34 and v0.37 are byte-identical on the wire. */
export type ProtocolVersion = 'v0.34' | 'v0.37' | 'v0.38' | 'v1.0';

/** All protocol versions, in release order. */
export const PROTOCOL_VERSIONS: readonly ProtocolVersion[] = ['v0.34', 'v0.37', 'v0.38', 'v1.0'];

/** `SignedMsgType` of CometBFT. */
export const SignedMsgType = {
  Unknown: 0,
  Prevote: 1,
  Precommit: 2,
  Proposal: 32,
} as const;

/**
 * A `google.protobuf.Timestamp`. Seconds and nanos are kept apart because a JS `Date` would
 * drop the nanoseconds that are part of the signed bytes.
 */
export interface Timestamp {
  seconds: bigint;
  /** 0 ..= 999_999_999 */
  nanos: number;
}

/** Go's zero `time.Time` (0001-01-01T00:00:00Z): what an absent timestamp decodes to. */
export const GO_ZERO_TIME: Readonly<Timestamp> = Object.freeze({ seconds: -62135596800n, nanos: 0 });

export interface PartSetHeader {
  total: number;
  /** empty or 32 bytes */
  hash: Uint8Array;
}

export interface BlockID {
  /** empty or 32 bytes */
  hash: Uint8Array;
  partSetHeader: PartSetHeader;
}

export interface Vote {
  /** SignedMsgType: 1 prevote, 2 precommit */
  type: number;
  height: bigint;
  round: number;
  blockId: BlockID;
  timestamp: Timestamp;
  validatorAddress: Uint8Array;
  validatorIndex: number;
  signature: Uint8Array;
  /** v0.38+ only; empty otherwise */
  extension: Uint8Array;
  /** v0.38+ only; empty otherwise */
  extensionSignature: Uint8Array;
}

export interface Proposal {
  /** SignedMsgType; canonical sign bytes always use 32 whatever this says */
  type: number;
  height: bigint;
  round: number;
  /** -1 means none */
  polRound: number;
  blockId: BlockID;
  timestamp: Timestamp;
  signature: Uint8Array;
}

/** A validator public key. ed25519: 32 bytes; secp256k1: 33 bytes compressed SEC1. */
export interface PubKey {
  type: KeyType;
  bytes: Uint8Array;
}

export type KeyType = 'ed25519' | 'secp256k1';

/** `RemoteSignerError`; CometBFT always sends code 0. */
export interface RemoteSignerError {
  code: number;
  description: string;
}

/**
 * One `privval.Message`: exactly one oneof case, or `empty` when none is set (a zero-length
 * body). An empty Message is what makes a node re-send its request (spec §1.2).
 */
export type PrivvalMessage =
  | { kind: 'empty' }
  | { kind: 'pubKeyRequest'; chainId: string }
  | { kind: 'pubKeyResponse'; pubKey?: PubKey; error?: RemoteSignerError }
  | {
      kind: 'signVoteRequest';
      /** absent when the sender left the field out (the Go reference would crash) */
      vote?: Vote;
      chainId: string;
      /** v1.0 only; always false for older versions */
      skipExtensionSigning: boolean;
    }
  | { kind: 'signedVoteResponse'; vote: Vote; error?: RemoteSignerError }
  | { kind: 'signProposalRequest'; proposal?: Proposal; chainId: string }
  | { kind: 'signedProposalResponse'; proposal: Proposal; error?: RemoteSignerError }
  | { kind: 'pingRequest' }
  | { kind: 'pingResponse' }
  /** v1.0 only */
  | { kind: 'signBytesRequest'; value: Uint8Array }
  /** v1.0 only */
  | { kind: 'signBytesResponse'; signature: Uint8Array; error?: RemoteSignerError };

export type PrivvalMessageKind = PrivvalMessage['kind'];

/** Height, round and step as FilePV orders them. Steps: 0 none, 1 propose, 2 prevote, 3 precommit. */
export interface HRS {
  height: bigint;
  round: number;
  step: number;
}

/**
 * FilePV's order on (height, round, step), lexicographic: negative, zero or positive as `a` is
 * below, equal to or above `b`.
 */
export function compareHRS(a: HRS, b: HRS): number {
  if (a.height !== b.height) return a.height < b.height ? -1 : 1;
  if (a.round !== b.round) return a.round < b.round ? -1 : 1;
  if (a.step !== b.step) return a.step < b.step ? -1 : 1;
  return 0;
}

export const Step = {
  None: 0,
  Propose: 1,
  Prevote: 2,
  Precommit: 3,
} as const;
