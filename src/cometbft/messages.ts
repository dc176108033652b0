/**
 * Encoder and decoder for `privval.Message` (spec §5) in the wire families v0.34/v0.37, v0.38
 * and v1.0, with gogoproto semantics (§5.4): non-nullable sub-messages are always written, an
 * absent timestamp decodes as Go's zero time, unknown fields inside sub-messages are skipped,
 * repeated sub-message fields merge and repeated scalars/oneof cases replace (last one wins).
 *
 * The body handled here carries no length prefix; see `framing.ts` for that.
 */

import { CodecError } from './errors.ts';
import {
  type BlockID,
  GO_ZERO_TIME,
  type KeyType,
  type PartSetHeader,
  PROTOCOL_VERSIONS,
  type PrivvalMessage,
  type PrivvalMessageKind,
  type Proposal,
  type ProtocolVersion,
  type PubKey,
  type RemoteSignerError,
  type Timestamp,
  type Vote,
} from './types.ts';
import { assertInt64, type FieldKey, ProtoReader, ProtoWriter, WireType } from './wire.ts';

/** 0001-01-01T00:00:00Z, the smallest seconds value Go's timestamp conversion accepts. */
const MIN_TIMESTAMP_SECONDS = -62135596800n;
/** 9999-12-31T23:59:59Z, the largest seconds value Go's timestamp conversion accepts. */
const MAX_TIMESTAMP_SECONDS = 253402300799n;
const MAX_NANOS = 999_999_999;

/** `privval.Message` oneof field numbers; 9 and 10 exist from v1.0 on. */
const CASE_FIELDS = {
  pubKeyRequest: 1,
  pubKeyResponse: 2,
  signVoteRequest: 3,
  signedVoteResponse: 4,
  signProposalRequest: 5,
  signedProposalResponse: 6,
  pingRequest: 7,
  pingResponse: 8,
  signBytesRequest: 9,
  signBytesResponse: 10,
} as const satisfies Record<Exclude<PrivvalMessageKind, 'empty'>, number>;

type CaseKind = keyof typeof CASE_FIELDS;

const KIND_BY_FIELD = new Map<number, CaseKind>(
  (Object.entries(CASE_FIELDS) as [CaseKind, number][]).map(([kind, field]) => [field, kind]),
);

function hasVoteExtensions(version: ProtocolVersion): boolean {
  return version === 'v0.38' || version === 'v1.0';
}

function isV1(version: ProtocolVersion): boolean {
  return version === 'v1.0';
}

function checkVersion(version: ProtocolVersion): void {
  if (!PROTOCOL_VERSIONS.includes(version)) {
    throw new CodecError('UNSUPPORTED', `unknown protocol version ${String(version)}`);
  }
}

/** A Go zero-value Vote: empty BlockID and Go's zero time (what error replies carry). */
export function zeroVote(): Vote {
  return {
    type: 0,
    height: 0n,
    round: 0,
    blockId: zeroBlockId(),
    timestamp: { ...GO_ZERO_TIME },
    validatorAddress: new Uint8Array(0),
    validatorIndex: 0,
    signature: new Uint8Array(0),
    extension: new Uint8Array(0),
    extensionSignature: new Uint8Array(0),
  };
}

/** A Go zero-value Proposal: empty BlockID and Go's zero time (what error replies carry). */
export function zeroProposal(): Proposal {
  return {
    type: 0,
    height: 0n,
    round: 0,
    polRound: 0,
    blockId: zeroBlockId(),
    timestamp: { ...GO_ZERO_TIME },
    signature: new Uint8Array(0),
  };
}

function zeroBlockId(): BlockID {
  return { hash: new Uint8Array(0), partSetHeader: { total: 0, hash: new Uint8Array(0) } };
}

// ---------------------------------------------------------------------------------------------
// Embedded types, shared with the canonical (sign bytes) encoding in signbytes.ts.

/**
 * Throws INVALID_FIELD unless `ts` is a timestamp Go can represent: nanos in 0..999999999 and
 * seconds within years 0001..9999 (Go's timestamp conversion refuses anything else).
 */
export function validateTimestamp(ts: Timestamp, what: string): void {
  assertInt64(ts.seconds, `${what}.seconds`);
  if (ts.seconds < MIN_TIMESTAMP_SECONDS || ts.seconds > MAX_TIMESTAMP_SECONDS) {
    throw new CodecError('INVALID_FIELD', `${what}.seconds out of range: ${ts.seconds}`);
  }
  if (!Number.isInteger(ts.nanos) || ts.nanos < 0 || ts.nanos > MAX_NANOS) {
    throw new CodecError('INVALID_FIELD', `${what}.nanos out of range: ${ts.nanos}`);
  }
}

/** `google.protobuf.Timestamp` body; both fields omitted when zero (the epoch encodes empty). */
export function encodeTimestamp(ts: Timestamp, what: string): Uint8Array {
  validateTimestamp(ts, what);
  return new ProtoWriter()
    .int64(1, ts.seconds, `${what}.seconds`)
    .int32(2, ts.nanos, `${what}.nanos`)
    .finish();
}

/** Decodes a present timestamp (an empty body is the epoch). Replaces, never merges, as Go's stdtime does. */
export function decodeTimestamp(body: Uint8Array, what: string): Timestamp {
  const ts: Timestamp = { seconds: 0n, nanos: 0 };
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    if (k.field === 1) ts.seconds = r.int64(k, `${what}.seconds`);
    else if (k.field === 2) ts.nanos = r.int32(k, `${what}.nanos`);
    else r.skip(k);
  }
  validateTimestamp(ts, what);
  return ts;
}

/** `PartSetHeader` body (also the layout of `CanonicalPartSetHeader`). */
export function encodePartSetHeader(psh: PartSetHeader): Uint8Array {
  return new ProtoWriter().uint32(1, psh.total, 'PartSetHeader.total').bytes(2, psh.hash).finish();
}

function decodePartSetHeaderInto(body: Uint8Array, into: PartSetHeader): void {
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    if (k.field === 1) into.total = r.uint32(k, 'PartSetHeader.total');
    else if (k.field === 2) into.hash = r.bytes(k, 'PartSetHeader.hash');
    else r.skip(k);
  }
}

/** `BlockID` body (also the layout of `CanonicalBlockID`); part_set_header is always written. */
export function encodeBlockId(b: BlockID): Uint8Array {
  return new ProtoWriter().bytes(1, b.hash).message(2, encodePartSetHeader(b.partSetHeader)).finish();
}

/** Merges a `BlockID` body into `into` (protobuf merge semantics for repeated occurrences). */
export function decodeBlockIdInto(body: Uint8Array, into: BlockID): void {
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    if (k.field === 1) into.hash = r.bytes(k, 'BlockID.hash');
    else if (k.field === 2) decodePartSetHeaderInto(r.view(k, 'BlockID.part_set_header'), into.partSetHeader);
    else r.skip(k);
  }
}

// ---------------------------------------------------------------------------------------------
// Vote, Proposal, RemoteSignerError, PublicKey

function encodeVote(v: Vote, version: ProtocolVersion): Uint8Array {
  const w = new ProtoWriter()
    .int32(1, v.type, 'Vote.type')
    .int64(2, v.height, 'Vote.height')
    .int32(3, v.round, 'Vote.round')
    .message(4, encodeBlockId(v.blockId))
    .message(5, encodeTimestamp(v.timestamp, 'Vote.timestamp'))
    .bytes(6, v.validatorAddress)
    .int32(7, v.validatorIndex, 'Vote.validator_index')
    .bytes(8, v.signature);
  if (hasVoteExtensions(version)) {
    w.bytes(9, v.extension).bytes(10, v.extensionSignature);
  } else if (v.extension.length > 0 || v.extensionSignature.length > 0) {
    // Dropping them silently would hide a caller bug; a v0.34/v0.37 node has no such fields.
    throw new CodecError('UNSUPPORTED', `vote extensions do not exist in ${version}`);
  }
  return w.finish();
}

function decodeVoteInto(body: Uint8Array, into: Vote, version: ProtocolVersion): Vote {
  const ext = hasVoteExtensions(version);
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    switch (k.field) {
      case 1:
        into.type = r.int32(k, 'Vote.type');
        break;
      case 2:
        into.height = r.int64(k, 'Vote.height');
        break;
      case 3:
        into.round = r.int32(k, 'Vote.round');
        break;
      case 4:
        decodeBlockIdInto(r.view(k, 'Vote.block_id'), into.blockId);
        break;
      case 5:
        into.timestamp = decodeTimestamp(r.view(k, 'Vote.timestamp'), 'Vote.timestamp');
        break;
      case 6:
        into.validatorAddress = r.bytes(k, 'Vote.validator_address');
        break;
      case 7:
        into.validatorIndex = r.int32(k, 'Vote.validator_index');
        break;
      case 8:
        into.signature = r.bytes(k, 'Vote.signature');
        break;
      case 9:
        // Before v0.38 fields 9/10 are unknown and skipped like any unknown field.
        if (ext) into.extension = r.bytes(k, 'Vote.extension');
        else r.skip(k);
        break;
      case 10:
        if (ext) into.extensionSignature = r.bytes(k, 'Vote.extension_signature');
        else r.skip(k);
        break;
      default:
        r.skip(k);
    }
  }
  return into;
}

function encodeProposal(p: Proposal): Uint8Array {
  return new ProtoWriter()
    .int32(1, p.type, 'Proposal.type')
    .int64(2, p.height, 'Proposal.height')
    .int32(3, p.round, 'Proposal.round')
    .int32(4, p.polRound, 'Proposal.pol_round')
    .message(5, encodeBlockId(p.blockId))
    .message(6, encodeTimestamp(p.timestamp, 'Proposal.timestamp'))
    .bytes(7, p.signature)
    .finish();
}

function decodeProposalInto(body: Uint8Array, into: Proposal): Proposal {
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    switch (k.field) {
      case 1:
        into.type = r.int32(k, 'Proposal.type');
        break;
      case 2:
        into.height = r.int64(k, 'Proposal.height');
        break;
      case 3:
        into.round = r.int32(k, 'Proposal.round');
        break;
      case 4:
        into.polRound = r.int32(k, 'Proposal.pol_round');
        break;
      case 5:
        decodeBlockIdInto(r.view(k, 'Proposal.block_id'), into.blockId);
        break;
      case 6:
        into.timestamp = decodeTimestamp(r.view(k, 'Proposal.timestamp'), 'Proposal.timestamp');
        break;
      case 7:
        into.signature = r.bytes(k, 'Proposal.signature');
        break;
      default:
        r.skip(k);
    }
  }
  return into;
}

function encodeError(e: RemoteSignerError): Uint8Array {
  return new ProtoWriter().int32(1, e.code, 'RemoteSignerError.code').string(2, e.description).finish();
}

function decodeErrorInto(body: Uint8Array, into: RemoteSignerError): RemoteSignerError {
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    if (k.field === 1) into.code = r.int32(k, 'RemoteSignerError.code');
    else if (k.field === 2) into.description = r.string(k, 'RemoteSignerError.description');
    else r.skip(k);
  }
  return into;
}

function newError(): RemoteSignerError {
  return { code: 0, description: '' };
}

/** `crypto.PublicKey` oneof field numbers (v0.34–v0.38 PubKeyResponse field 1). */
const PUBLIC_KEY_FIELDS: Record<KeyType, number> = { ed25519: 1, secp256k1: 2 };

function checkKeyType(type: string): KeyType {
  if (type === 'ed25519' || type === 'secp256k1') return type;
  throw new CodecError('UNSUPPORTED', `unsupported public key type ${JSON.stringify(type)}`);
}

function encodePublicKey(pk: PubKey | undefined): Uint8Array {
  if (pk === undefined) return new Uint8Array(0);
  // A oneof case is written even when its bytes are empty.
  return new ProtoWriter().message(PUBLIC_KEY_FIELDS[checkKeyType(pk.type)], pk.bytes).finish();
}

/** Decodes a `crypto.PublicKey`; cases this codec does not know (bls12381, …) are unknown fields. */
function decodePublicKey(body: Uint8Array, current: PubKey | undefined): PubKey | undefined {
  let pk = current;
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    if (k.field === 1) pk = { type: 'ed25519', bytes: r.bytes(k, 'PublicKey.ed25519') };
    else if (k.field === 2) pk = { type: 'secp256k1', bytes: r.bytes(k, 'PublicKey.secp256k1') };
    else r.skip(k);
  }
  return pk;
}

// ---------------------------------------------------------------------------------------------
// Oneof case bodies

function withError<T extends object>(msg: T, error: RemoteSignerError | undefined): T {
  return error === undefined ? msg : { ...msg, error };
}

function encodePubKeyResponse(
  m: Extract<PrivvalMessage, { kind: 'pubKeyResponse' }>,
  version: ProtocolVersion,
): Uint8Array {
  const w = new ProtoWriter();
  if (isV1(version)) {
    // v1.0 layout: 2 error, 3 pub_key_bytes, 4 pub_key_type; field 1 is reserved.
    if (m.error !== undefined) w.message(2, encodeError(m.error));
    if (m.pubKey !== undefined) w.bytes(3, m.pubKey.bytes).string(4, checkKeyType(m.pubKey.type));
  } else {
    // pub_key is non-nullable in v0.34–v0.38: written even when empty (`0a 00`).
    w.message(1, encodePublicKey(m.pubKey));
    if (m.error !== undefined) w.message(2, encodeError(m.error));
  }
  return w.finish();
}

function decodePubKeyResponse(body: Uint8Array, version: ProtocolVersion): PrivvalMessage {
  const v1 = isV1(version);
  let pubKey: PubKey | undefined;
  let error: RemoteSignerError | undefined;
  let keyBytes: Uint8Array = new Uint8Array(0);
  let keyType = '';
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    if (k.field === 2) error = decodeErrorInto(r.view(k, 'PubKeyResponse.error'), error ?? newError());
    else if (!v1 && k.field === 1) pubKey = decodePublicKey(r.view(k, 'PubKeyResponse.pub_key'), pubKey);
    else if (v1 && k.field === 3) keyBytes = r.bytes(k, 'PubKeyResponse.pub_key_bytes');
    else if (v1 && k.field === 4) keyType = r.string(k, 'PubKeyResponse.pub_key_type');
    else r.skip(k);
  }
  if (v1) {
    if (keyType !== '') pubKey = { type: checkKeyType(keyType), bytes: keyBytes };
    else if (keyBytes.length > 0) {
      throw new CodecError('INVALID_FIELD', 'PubKeyResponse has pub_key_bytes but no pub_key_type');
    }
  }
  const msg: PrivvalMessage = { kind: 'pubKeyResponse' };
  return withError(pubKey === undefined ? msg : { ...msg, pubKey }, error);
}

function decodeSignVoteRequest(body: Uint8Array, version: ProtocolVersion): PrivvalMessage {
  let vote: Vote | undefined;
  let chainId = '';
  let skipExtensionSigning = false;
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    if (k.field === 1) vote = decodeVoteInto(r.view(k, 'SignVoteRequest.vote'), vote ?? zeroVote(), version);
    else if (k.field === 2) chainId = r.string(k, 'SignVoteRequest.chain_id');
    else if (k.field === 3 && isV1(version)) {
      skipExtensionSigning = r.bool(k, 'SignVoteRequest.skip_extension_signing');
    } else r.skip(k);
  }
  // An absent vote stays absent (the key is left out): Go would crash on it; the guard refuses it.
  return vote === undefined
    ? { kind: 'signVoteRequest', chainId, skipExtensionSigning }
    : { kind: 'signVoteRequest', vote, chainId, skipExtensionSigning };
}

function decodeSignProposalRequest(body: Uint8Array): PrivvalMessage {
  let proposal: Proposal | undefined;
  let chainId = '';
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    if (k.field === 1) {
      proposal = decodeProposalInto(r.view(k, 'SignProposalRequest.proposal'), proposal ?? zeroProposal());
    } else if (k.field === 2) chainId = r.string(k, 'SignProposalRequest.chain_id');
    else r.skip(k);
  }
  return proposal === undefined
    ? { kind: 'signProposalRequest', chainId }
    : { kind: 'signProposalRequest', proposal, chainId };
}

function decodeSignedVoteResponse(body: Uint8Array, version: ProtocolVersion): PrivvalMessage {
  // vote is non-nullable: absent decodes as the zero Vote.
  const vote = zeroVote();
  let error: RemoteSignerError | undefined;
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    if (k.field === 1) decodeVoteInto(r.view(k, 'SignedVoteResponse.vote'), vote, version);
    else if (k.field === 2)
      error = decodeErrorInto(r.view(k, 'SignedVoteResponse.error'), error ?? newError());
    else r.skip(k);
  }
  return withError({ kind: 'signedVoteResponse', vote }, error);
}

function decodeSignedProposalResponse(body: Uint8Array): PrivvalMessage {
  const proposal = zeroProposal();
  let error: RemoteSignerError | undefined;
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    if (k.field === 1) decodeProposalInto(r.view(k, 'SignedProposalResponse.proposal'), proposal);
    else if (k.field === 2) {
      error = decodeErrorInto(r.view(k, 'SignedProposalResponse.error'), error ?? newError());
    } else r.skip(k);
  }
  return withError({ kind: 'signedProposalResponse', proposal }, error);
}

function decodeSignBytesResponse(body: Uint8Array): PrivvalMessage {
  let signature: Uint8Array = new Uint8Array(0);
  let error: RemoteSignerError | undefined;
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    if (k.field === 1) signature = r.bytes(k, 'SignBytesResponse.signature');
    else if (k.field === 2)
      error = decodeErrorInto(r.view(k, 'SignBytesResponse.error'), error ?? newError());
    else r.skip(k);
  }
  return withError({ kind: 'signBytesResponse', signature }, error);
}

/** Reads a message with a single string or bytes field 1 (PubKeyRequest, SignBytesRequest). */
function decodeField1(body: Uint8Array, read: (r: ProtoReader, k: FieldKey) => void): void {
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    if (k.field === 1) read(r, k);
    else r.skip(k);
  }
}

/** Parses a message without fields (Ping*): unknown fields are skipped but must be well-formed. */
function decodeNoFields(body: Uint8Array): void {
  const r = new ProtoReader(body);
  while (!r.done) r.skip(r.key());
}

function decodeCase(kind: CaseKind, body: Uint8Array, version: ProtocolVersion): PrivvalMessage {
  switch (kind) {
    case 'pubKeyRequest': {
      let chainId = '';
      decodeField1(body, (r, k) => {
        chainId = r.string(k, 'PubKeyRequest.chain_id');
      });
      return { kind, chainId };
    }
    case 'pubKeyResponse':
      return decodePubKeyResponse(body, version);
    case 'signVoteRequest':
      return decodeSignVoteRequest(body, version);
    case 'signedVoteResponse':
      return decodeSignedVoteResponse(body, version);
    case 'signProposalRequest':
      return decodeSignProposalRequest(body);
    case 'signedProposalResponse':
      return decodeSignedProposalResponse(body);
    case 'pingRequest':
    case 'pingResponse':
      decodeNoFields(body);
      return { kind };
    case 'signBytesRequest': {
      let value: Uint8Array = new Uint8Array(0);
      decodeField1(body, (r, k) => {
        value = r.bytes(k, 'SignBytesRequest.value');
      });
      return { kind, value };
    }
    case 'signBytesResponse':
      return decodeSignBytesResponse(body);
  }
}

function encodeCase(msg: Exclude<PrivvalMessage, { kind: 'empty' }>, version: ProtocolVersion): Uint8Array {
  const w = new ProtoWriter();
  switch (msg.kind) {
    case 'pubKeyRequest':
      return w.string(1, msg.chainId).finish();
    case 'pubKeyResponse':
      return encodePubKeyResponse(msg, version);
    case 'signVoteRequest':
      if (msg.skipExtensionSigning && !isV1(version)) {
        // Dropping the flag would make an older signer sign an extension it was told to skip.
        throw new CodecError('UNSUPPORTED', `skip_extension_signing does not exist in ${version}`);
      }
      if (msg.vote !== undefined) w.message(1, encodeVote(msg.vote, version));
      return w.string(2, msg.chainId).bool(3, msg.skipExtensionSigning).finish();
    case 'signedVoteResponse':
      w.message(1, encodeVote(msg.vote, version));
      if (msg.error !== undefined) w.message(2, encodeError(msg.error));
      return w.finish();
    case 'signProposalRequest':
      if (msg.proposal !== undefined) w.message(1, encodeProposal(msg.proposal));
      return w.string(2, msg.chainId).finish();
    case 'signedProposalResponse':
      w.message(1, encodeProposal(msg.proposal));
      if (msg.error !== undefined) w.message(2, encodeError(msg.error));
      return w.finish();
    case 'pingRequest':
    case 'pingResponse':
      return w.finish();
    case 'signBytesRequest':
      return w.bytes(1, msg.value).finish();
    case 'signBytesResponse':
      w.bytes(1, msg.signature);
      if (msg.error !== undefined) w.message(2, encodeError(msg.error));
      return w.finish();
  }
}

// ---------------------------------------------------------------------------------------------
// privval.Message

/**
 * Encodes one `privval.Message` body (no length prefix) for `version`.
 * Throws CodecError UNSUPPORTED for a case or field the version does not have, INVALID_FIELD
 * for out-of-range values.
 */
export function encodeMessage(msg: PrivvalMessage, version: ProtocolVersion): Uint8Array {
  checkVersion(version);
  if (msg.kind === 'empty') return new Uint8Array(0);
  const field = CASE_FIELDS[msg.kind];
  if (field === undefined || (field > 8 && !isV1(version))) {
    throw new CodecError('UNSUPPORTED', `message ${String(msg.kind)} does not exist in ${version}`);
  }
  // Oneof cases are always written, even with an empty body (e.g. PingRequest = `3a 00`).
  return new ProtoWriter().message(field, encodeCase(msg, version)).finish();
}

/**
 * The oneof case a `privval.Message` body carries, read from its keys alone, so that a request
 * whose fields do not decode (a round of 2^31, a timestamp past year 9999) can still be answered
 * with a response of its type. Undefined when not even a key of a case this version has can be
 * read.
 */
export function messageCaseOf(body: Uint8Array, version: ProtocolVersion): PrivvalMessageKind | undefined {
  let kind: CaseKind | undefined;
  try {
    const r = new ProtoReader(body);
    while (!r.done) {
      const k = r.key();
      const next = KIND_BY_FIELD.get(k.field);
      // every case is a length-delimited message: anything else is not a request of that type
      if (next === undefined || (k.field > 8 && !isV1(version)) || k.wireType !== WireType.LengthDelimited) {
        return undefined;
      }
      kind = next;
      r.skip(k);
    }
  } catch {
    // a broken body: the last case whose key could be read, if any
  }
  return kind;
}

/**
 * Decodes one `privval.Message` body (no length prefix) for `version`. A zero-length body is
 * `{ kind: 'empty' }`. Throws only CodecError; a oneof case the version lacks is UNKNOWN_MESSAGE.
 */
export function decodeMessage(body: Uint8Array, version: ProtocolVersion): PrivvalMessage {
  checkVersion(version);
  let msg: PrivvalMessage = { kind: 'empty' };
  const r = new ProtoReader(body);
  while (!r.done) {
    const k = r.key();
    const kind = KIND_BY_FIELD.get(k.field);
    if (kind === undefined || (k.field > 8 && !isV1(version))) {
      throw new CodecError('UNKNOWN_MESSAGE', `unknown privval message case ${k.field} for ${version}`);
    }
    // A repeated oneof case replaces the previous one, as in Go.
    msg = decodeCase(kind, r.view(k, `Message.${kind}`), version);
  }
  return msg;
}
