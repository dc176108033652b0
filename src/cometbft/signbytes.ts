/**
 * Canonical sign bytes (spec §6): `uvarint(len) ‖ Canonical*` for votes, proposals and vote
 * extensions, their decoders, and the timestamp-only comparison FilePV uses on a same-HRS
 * re-sign (spec §7.2 step 4).
 */

import { bytesEqual } from './bytes.ts';
import { CodecError } from './errors.ts';
import { decodeUvarint, lengthPrefixed } from './framing.ts';
import { decodeBlockIdInto, decodeTimestamp, encodeBlockId, encodeTimestamp } from './messages.ts';
import {
  type BlockID,
  GO_ZERO_TIME,
  type Proposal,
  SignedMsgType,
  type Timestamp,
  type Vote,
} from './types.ts';
import { assertInt32, ProtoReader, ProtoWriter } from './wire.ts';

/** A decoded `CanonicalVote`. `blockId` is absent for a nil vote. */
export interface CanonicalVote {
  type: number;
  height: bigint;
  round: bigint;
  blockId?: BlockID;
  timestamp: Timestamp;
  chainId: string;
}

/** A decoded `CanonicalProposal`. `blockId` is absent for a nil proposal. */
export interface CanonicalProposal {
  type: number;
  height: bigint;
  round: bigint;
  polRound: bigint;
  blockId?: BlockID;
  timestamp: Timestamp;
  chainId: string;
}

/** True for the zero ("nil") BlockID: no hash and an all-zero PartSetHeader (spec §6.2). */
export function isZeroBlockId(b: BlockID): boolean {
  return b.hash.length === 0 && b.partSetHeader.total === 0 && b.partSetHeader.hash.length === 0;
}

function checkHash(hash: Uint8Array, what: string): void {
  // Go validates while canonicalising and panics; refusing here keeps such a request unsigned.
  if (hash.length !== 0 && hash.length !== 32) {
    throw new CodecError('INVALID_FIELD', `${what} must be empty or 32 bytes, got ${hash.length}`);
  }
}

/** `CanonicalBlockID` body, or undefined for a zero BlockID (the field is then left out). */
function canonicalBlockId(b: BlockID): Uint8Array | undefined {
  checkHash(b.hash, 'BlockID.hash');
  checkHash(b.partSetHeader.hash, 'PartSetHeader.hash');
  if (isZeroBlockId(b)) return undefined;
  // CanonicalBlockID/CanonicalPartSetHeader have the same layout as BlockID/PartSetHeader.
  return encodeBlockId(b);
}

/** An int32 widened to int64 (round, pol_round); checked first so BigInt never sees a fraction. */
function widen(v: number, what: string): bigint {
  assertInt32(v, what);
  return BigInt(v);
}

/** `VoteSignBytes(chainId, vote)`: the length-prefixed CanonicalVote. */
export function voteSignBytes(chainId: string, vote: Vote): Uint8Array {
  const w = new ProtoWriter()
    .int32(1, vote.type, 'Vote.type')
    .sfixed64(2, vote.height, 'Vote.height')
    .sfixed64(3, widen(vote.round, 'Vote.round'), 'Vote.round');
  const blockId = canonicalBlockId(vote.blockId);
  if (blockId !== undefined) w.message(4, blockId);
  w.message(5, encodeTimestamp(vote.timestamp, 'Vote.timestamp')).string(6, chainId);
  return lengthPrefixed(w.finish());
}

/** `ProposalSignBytes(chainId, proposal)`: the length-prefixed CanonicalProposal (type is always 32). */
export function proposalSignBytes(chainId: string, proposal: Proposal): Uint8Array {
  const w = new ProtoWriter()
    .int32(1, SignedMsgType.Proposal, 'CanonicalProposal.type')
    .sfixed64(2, proposal.height, 'Proposal.height')
    .sfixed64(3, widen(proposal.round, 'Proposal.round'), 'Proposal.round')
    .int64(4, widen(proposal.polRound, 'Proposal.pol_round'), 'Proposal.pol_round');
  const blockId = canonicalBlockId(proposal.blockId);
  if (blockId !== undefined) w.message(5, blockId);
  w.message(6, encodeTimestamp(proposal.timestamp, 'Proposal.timestamp')).string(7, chainId);
  return lengthPrefixed(w.finish());
}

/** `VoteExtensionSignBytes(chainId, vote)`: the length-prefixed CanonicalVoteExtension. */
export function voteExtensionSignBytes(chainId: string, vote: Vote): Uint8Array {
  const body = new ProtoWriter()
    .bytes(1, vote.extension)
    .sfixed64(2, vote.height, 'Vote.height')
    .sfixed64(3, widen(vote.round, 'Vote.round'), 'Vote.round')
    .string(4, chainId)
    .finish();
  return lengthPrefixed(body);
}

/** The body of length-prefixed sign bytes; the prefix must cover exactly the rest of the input. */
function unprefix(signBytes: Uint8Array): Uint8Array {
  const prefix = decodeUvarint(signBytes, 0);
  if (prefix === undefined) throw new CodecError('TRUNCATED', 'sign bytes end inside the length prefix');
  const available = BigInt(signBytes.length - prefix.bytesRead);
  if (prefix.value > available)
    throw new CodecError('TRUNCATED', 'sign bytes shorter than their length prefix');
  // Go ignores trailing bytes; refusing them is stricter and only ever leads to "conflicting data".
  if (prefix.value < available) throw new CodecError('INVALID_FIELD', 'trailing bytes after the sign bytes');
  return signBytes.subarray(prefix.bytesRead);
}

function newBlockId(): BlockID {
  return { hash: new Uint8Array(0), partSetHeader: { total: 0, hash: new Uint8Array(0) } };
}

/** Decodes `VoteSignBytes` output. An absent timestamp is Go's zero time. Throws CodecError. */
export function decodeCanonicalVote(signBytes: Uint8Array): CanonicalVote {
  const cv: CanonicalVote = { type: 0, height: 0n, round: 0n, timestamp: { ...GO_ZERO_TIME }, chainId: '' };
  const r = new ProtoReader(unprefix(signBytes));
  while (!r.done) {
    const k = r.key();
    switch (k.field) {
      case 1:
        cv.type = r.int32(k, 'CanonicalVote.type');
        break;
      case 2:
        cv.height = r.sfixed64(k, 'CanonicalVote.height');
        break;
      case 3:
        cv.round = r.sfixed64(k, 'CanonicalVote.round');
        break;
      case 4:
        cv.blockId ??= newBlockId();
        decodeBlockIdInto(r.view(k, 'CanonicalVote.block_id'), cv.blockId);
        break;
      case 5:
        cv.timestamp = decodeTimestamp(r.view(k, 'CanonicalVote.timestamp'), 'CanonicalVote.timestamp');
        break;
      case 6:
        cv.chainId = r.string(k, 'CanonicalVote.chain_id');
        break;
      default:
        r.skip(k);
    }
  }
  return cv;
}

/** Decodes `ProposalSignBytes` output. An absent timestamp is Go's zero time. Throws CodecError. */
export function decodeCanonicalProposal(signBytes: Uint8Array): CanonicalProposal {
  const cp: CanonicalProposal = {
    type: 0,
    height: 0n,
    round: 0n,
    polRound: 0n,
    timestamp: { ...GO_ZERO_TIME },
    chainId: '',
  };
  const r = new ProtoReader(unprefix(signBytes));
  while (!r.done) {
    const k = r.key();
    switch (k.field) {
      case 1:
        cp.type = r.int32(k, 'CanonicalProposal.type');
        break;
      case 2:
        cp.height = r.sfixed64(k, 'CanonicalProposal.height');
        break;
      case 3:
        cp.round = r.sfixed64(k, 'CanonicalProposal.round');
        break;
      case 4:
        cp.polRound = r.int64(k, 'CanonicalProposal.pol_round');
        break;
      case 5:
        cp.blockId ??= newBlockId();
        decodeBlockIdInto(r.view(k, 'CanonicalProposal.block_id'), cp.blockId);
        break;
      case 6:
        cp.timestamp = decodeTimestamp(
          r.view(k, 'CanonicalProposal.timestamp'),
          'CanonicalProposal.timestamp',
        );
        break;
      case 7:
        cp.chainId = r.string(k, 'CanonicalProposal.chain_id');
        break;
      default:
        r.skip(k);
    }
  }
  return cp;
}

/**
 * Protobuf equality of two optional CanonicalBlockIDs: an absent one differs from a present
 * empty one, as in Go's `proto.Equal` on a nil versus a non-nil pointer.
 */
function blockIdsEqual(a: BlockID | undefined, b: BlockID | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return (
    bytesEqual(a.hash, b.hash) &&
    a.partSetHeader.total === b.partSetHeader.total &&
    bytesEqual(a.partSetHeader.hash, b.partSetHeader.hash)
  );
}

function decodeOrUndefined<T>(decode: (b: Uint8Array) => T, bytes: Uint8Array): T | undefined {
  try {
    return decode(bytes);
  } catch (err) {
    if (err instanceof CodecError) return undefined;
    throw err;
  }
}

/**
 * FilePV's same-HRS rule: when `stored` and `requested` (both length-prefixed canonical sign
 * bytes of `kind`) are equal in every field except the timestamp, returns the timestamp of
 * `stored` (also for identical bytes). Returns undefined when any other field differs or either
 * input fails to decode; the caller must then refuse ("conflicting data").
 *
 * Compared like Go: decode both and compare all fields but the timestamp (vote: type, height,
 * round, block_id, chain_id; proposal: also pol_round).
 */
export function timestampOnlyDifference(
  kind: 'vote' | 'proposal',
  stored: Uint8Array,
  requested: Uint8Array,
): Timestamp | undefined {
  if (kind === 'vote') {
    const s = decodeOrUndefined(decodeCanonicalVote, stored);
    const q = decodeOrUndefined(decodeCanonicalVote, requested);
    if (s === undefined || q === undefined) return undefined;
    const same =
      s.type === q.type &&
      s.height === q.height &&
      s.round === q.round &&
      blockIdsEqual(s.blockId, q.blockId) &&
      s.chainId === q.chainId;
    return same ? { ...s.timestamp } : undefined;
  }
  const s = decodeOrUndefined(decodeCanonicalProposal, stored);
  const q = decodeOrUndefined(decodeCanonicalProposal, requested);
  if (s === undefined || q === undefined) return undefined;
  const same =
    s.type === q.type &&
    s.height === q.height &&
    s.round === q.round &&
    s.polRound === q.polRound &&
    blockIdsEqual(s.blockId, q.blockId) &&
    s.chainId === q.chainId;
  return same ? { ...s.timestamp } : undefined;
}
