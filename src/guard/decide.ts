/**
 * The double-sign rule of CometKMS, in one pure function: `decide(last, request, rules)` says
 * what may be done with one SignVote or SignProposal request, given the last reserved state of
 * the chain. It does no I/O, reads no clock and keeps no state; `ChainGuard` carries out what
 * the verdict says (reserve, sign, record, reply). Everything that decides whether bytes may be
 * signed lives here, so it can be read, table-tested and model-checked in one place.
 *
 * Invariants (ARCHITECTURE §2) that every verdict upholds:
 *  1. Only two kinds of bytes are ever handed to the signer: the request's own sign bytes after
 *     they were reserved at a strictly higher HRS (`reserve`), or the bytes already reserved at
 *     the requested HRS (`sign_reserved`). So for one (chain, HRS) at most one sign-bytes value
 *     (and one vote-extension value) is ever signed, whatever the requests say.
 *  2. A request at an HRS below the last reserved one is refused (monotonic HRS; FilePV order:
 *     height, then round, then step with propose=1 < prevote=2 < precommit=3).
 *  3. At the same HRS: identical bytes are re-signed; bytes that differ only in the timestamp
 *     get the reserved bytes signed and the reserved timestamp returned; any other difference,
 *     including another vote extension, is refused.
 *  4. Nothing out of range is reserved: heights 1..2^62, at most `maxHeightJump` above the last
 *     reserved height (so one hostile request cannot burn every later height), rounds >= 0,
 *     proposals with pol_round -1 or 0..round-1, the key's own validator address, the chain's
 *     own id.
 *  5. A state observed in the store may only move forward from the one known (`checkAdvance`):
 *     a store that went backwards stops signing rather than becoming a new baseline.
 *
 * Every refusal carries a typed code next to its text; where FilePV has a text, it is FilePV's,
 * verbatim (spec §7.1), because operators and tools grep for them.
 */
import { bytesEqual } from '../cometbft/bytes.ts';
import { CodecError } from '../cometbft/errors.ts';
import { toHexUpper } from '../cometbft/keys.ts';
import {
  isZeroBlockId,
  proposalSignBytes,
  timestampOnlyDifference,
  voteExtensionSignBytes,
  voteSignBytes,
} from '../cometbft/signbytes.ts';
import { boundText } from '../cometbft/text.ts';
import {
  compareHRS,
  type HRS,
  type PrivvalMessage,
  type Proposal,
  type ProtocolVersion,
  SignedMsgType,
  Step,
  type Timestamp,
  type Vote,
} from '../cometbft/types.ts';
import type { SignState } from '../store/types.ts';

/** Heights above this are refused outright: no chain gets there, and int64 ends at 2^63-1. */
export const MAX_HEIGHT = 1n << 62n;

/** Why a request was refused. {@link isDoubleSignRefusal} tells the double-sign ones. */
export type RefusalCode =
  /** the request names another chain */
  | 'chain_id_mismatch'
  /** a SignVote without a vote, or a SignProposal without a proposal */
  | 'missing_payload'
  /** a vote type other than prevote or precommit */
  | 'invalid_vote_type'
  /** height <= 0 */
  | 'invalid_height'
  /** height above 2^62 */
  | 'height_out_of_range'
  /** more than max_height_jump above the last reserved height */
  | 'height_jump'
  /** round < 0 */
  | 'invalid_round'
  /** pol_round < -1, or pol_round >= round */
  | 'invalid_pol_round'
  /** the vote names another validator */
  | 'validator_address_mismatch'
  /** an extension on a prevote or a nil precommit */
  | 'unexpected_extension'
  /** the sign bytes cannot be built (a hash that is neither empty nor 32 bytes, a timestamp out of range) */
  | 'invalid_field'
  | 'height_regression'
  | 'round_regression'
  | 'step_regression'
  /** the same HRS as a state that carries no sign bytes to compare with */
  | 'no_sign_bytes'
  /** the same HRS with other sign bytes (not only the timestamp) */
  | 'conflicting_data'
  /** the same HRS with another vote extension than the one reserved */
  | 'conflicting_extension'
  /** the request names another chain (PubKey) */
  | 'pubkey_chain_id_mismatch'
  /** v1.0 SignBytes: arbitrary bytes are never signed with a validator key */
  | 'sign_bytes_refused'
  /** a request of a known type whose fields cannot be decoded (e.g. a round >= 2^31) */
  | 'undecodable_request';

/** The refusals that stopped a double sign: the request conflicted with what was reserved. */
const DOUBLE_SIGN_CODES: ReadonlySet<string> = new Set<RefusalCode>([
  'height_regression',
  'round_regression',
  'step_regression',
  'conflicting_data',
  'conflicting_extension',
]);

/** Whether `code` is a refusal that stopped a double sign (metrics count these apart). */
export function isDoubleSignRefusal(code: string | undefined): code is RefusalCode {
  return code !== undefined && DOUBLE_SIGN_CODES.has(code);
}

/** The chain-specific parameters of the rule. */
export interface ChainRules {
  chainId: string;
  protocol: ProtocolVersion;
  /** refuse a height more than this above the last reserved one */
  maxHeightJump: number;
  /** the key's address: a vote naming another validator is refused; undefined: not checked */
  validatorAddress?: Uint8Array;
}

/** A SignVote or SignProposal request. */
export type SignRequest = Extract<PrivvalMessage, { kind: 'signVoteRequest' | 'signProposalRequest' }>;

/** What goes back to the node once signed: the request's vote or proposal, to be filled in. */
export type ReplyTemplate = { kind: 'vote'; vote: Vote } | { kind: 'proposal'; proposal: Proposal };

/**
 * What one request may lead to.
 * - `refuse`: a final RemoteSignerError.
 * - `reserve`: the requested HRS is above `last`: reserve `next` (HRS, sign bytes, extension
 *   sign bytes; no signature) durably, and only then sign `next.signBytes` and
 *   `next.extensionSignBytes`.
 * - `sign_reserved`: the requested HRS is `last`'s and the request asks for what is reserved
 *   there: sign `signBytes` (always `last.signBytes`) and `extensionSignBytes` (`last`'s, or
 *   none when the request needs none), or return `recorded` when it is a valid signature of
 *   them. With `timestamp`, only the timestamp differed: reply with that (reserved) timestamp.
 */
export type Verdict =
  | { action: 'refuse'; code: RefusalCode; text: string }
  | { action: 'reserve'; hrs: HRS; next: SignState; reply: ReplyTemplate }
  | {
      action: 'sign_reserved';
      hrs: HRS;
      outcome: 'resigned' | 'timestamp_only';
      signBytes: Uint8Array;
      extensionSignBytes: Uint8Array;
      /** the signature recorded with the reservation, if any (check it before returning it) */
      recorded: Uint8Array;
      timestamp?: Timestamp;
      reply: ReplyTemplate;
    };

const EMPTY = new Uint8Array(0);

const refuse = (code: RefusalCode, text: string): Verdict => ({ action: 'refuse', code, text });

/**
 * The verdict on `request` for a chain whose last reserved state is `last` (ARCHITECTURE §2,
 * spec §7). Pure and synchronous: the same inputs always give the same verdict.
 */
export function decide(last: SignState, request: SignRequest, rules: ChainRules): Verdict {
  const what = request.kind === 'signVoteRequest' ? 'vote' : 'proposal';
  if (request.chainId !== rules.chainId) {
    return refuse(
      'chain_id_mismatch',
      `unable to sign ${what}: chain id mismatch: got ${boundText(request.chainId)}, want ${rules.chainId}`,
    );
  }
  return request.kind === 'signVoteRequest'
    ? decideVote(last, request, rules)
    : decideProposal(last, request, rules);
}

function decideVote(
  last: SignState,
  request: Extract<SignRequest, { kind: 'signVoteRequest' }>,
  rules: ChainRules,
): Verdict {
  const vote = request.vote;
  if (vote === undefined) return refuse('missing_payload', 'unable to sign vote: missing vote');
  const step = voteStep(vote.type);
  if (step === undefined) {
    return refuse('invalid_vote_type', `error signing vote: invalid vote type ${vote.type}`);
  }
  const hrs: HRS = { height: vote.height, round: vote.round, step };
  const problem = rangeProblem(hrs, last, rules) ?? addressProblem(vote.validatorAddress, rules);
  if (problem !== undefined) return refuse(problem.code, `error signing vote: ${problem.text}`);

  const policy = extensionPolicy(rules.protocol, vote, request.skipExtensionSigning);
  if (policy === 'forbid' && vote.extension.length > 0) {
    return refuse(
      'unexpected_extension',
      'error signing vote: unexpected vote extension - extensions are only allowed in non-nil precommits',
    );
  }
  const bytes = signBytesOf('vote', () => ({
    signBytes: voteSignBytes(rules.chainId, vote),
    extensionSignBytes: policy === 'sign' ? voteExtensionSignBytes(rules.chainId, vote) : EMPTY,
  }));
  if ('code' in bytes) return refuse(bytes.code, bytes.text);
  return decideHRS(last, 'vote', hrs, bytes, { kind: 'vote', vote });
}

function decideProposal(
  last: SignState,
  request: Extract<SignRequest, { kind: 'signProposalRequest' }>,
  rules: ChainRules,
): Verdict {
  const proposal = request.proposal;
  if (proposal === undefined) return refuse('missing_payload', 'unable to sign proposal: missing proposal');
  // A proposal is step 1 whatever its type field says (spec §7.1).
  const hrs: HRS = { height: proposal.height, round: proposal.round, step: Step.Propose };
  const problem = rangeProblem(hrs, last, rules) ?? polRoundProblem(proposal);
  if (problem !== undefined) return refuse(problem.code, `error signing proposal: ${problem.text}`);
  const bytes = signBytesOf('proposal', () => ({
    signBytes: proposalSignBytes(rules.chainId, proposal),
    extensionSignBytes: EMPTY,
  }));
  if ('code' in bytes) return refuse(bytes.code, bytes.text);
  return decideHRS(last, 'proposal', hrs, bytes, { kind: 'proposal', proposal });
}

interface SignBytesPair {
  signBytes: Uint8Array;
  /** empty unless the vote's extension must be signed */
  extensionSignBytes: Uint8Array;
}

/** FilePV's CheckHRS and same-HRS rules (spec §7.1, §7.2 step 4) with the reservation rules. */
function decideHRS(
  last: SignState,
  kind: 'vote' | 'proposal',
  hrs: HRS,
  bytes: SignBytesPair,
  reply: ReplyTemplate,
): Verdict {
  const order = hrsOrder(last, hrs);
  if (order.kind === 'below') return refuse(order.code, `error signing ${kind}: ${order.text}`);
  if (order.kind === 'above') {
    return {
      action: 'reserve',
      hrs,
      next: { ...hrs, ...bytes, signature: EMPTY },
      reply,
    };
  }
  if (last.signBytes.length === 0)
    return refuse('no_sign_bytes', `error signing ${kind}: no SignBytes found`);
  let timestamp: Timestamp | undefined;
  if (!bytesEqual(last.signBytes, bytes.signBytes)) {
    timestamp = timestampOnlyDifference(kind, last.signBytes, bytes.signBytes);
    if (timestamp === undefined) return refuse('conflicting_data', `error signing ${kind}: conflicting data`);
  }
  // FilePV signs whatever extension a retry carries. Here the extension sign bytes are part of
  // the reservation: only the reserved ones may be signed at this HRS, so two different
  // extension signatures at one HRS never exist. Refusing costs at most this precommit (an
  // application that produced another extension after a crash); a plain retry carries the same
  // extension and is served.
  if (bytes.extensionSignBytes.length > 0 && !bytesEqual(bytes.extensionSignBytes, last.extensionSignBytes)) {
    return refuse('conflicting_extension', `error signing ${kind}: conflicting vote extension`);
  }
  return {
    action: 'sign_reserved',
    hrs,
    outcome: timestamp === undefined ? 'resigned' : 'timestamp_only',
    signBytes: last.signBytes,
    // Proven equal to the reserved extension above; none when this request needs none.
    extensionSignBytes: bytes.extensionSignBytes.length > 0 ? last.extensionSignBytes : EMPTY,
    recorded: last.signature,
    ...(timestamp === undefined ? {} : { timestamp }),
    reply,
  };
}

type HrsOrder =
  | { kind: 'above' }
  | { kind: 'same' }
  | { kind: 'below'; code: 'height_regression' | 'round_regression' | 'step_regression'; text: string };

/** Where `req` stands relative to `last`, with FilePV's exact regression texts. */
function hrsOrder(last: HRS, req: HRS): HrsOrder {
  if (last.height > req.height) {
    return {
      kind: 'below',
      code: 'height_regression',
      text: `height regression. Got ${req.height}, last height ${last.height}`,
    };
  }
  if (last.height === req.height) {
    if (last.round > req.round) {
      return {
        kind: 'below',
        code: 'round_regression',
        text: `round regression at height ${req.height}. Got ${req.round}, last round ${last.round}`,
      };
    }
    if (last.round === req.round) {
      if (last.step > req.step) {
        return {
          kind: 'below',
          code: 'step_regression',
          text: `step regression at height ${req.height} round ${req.round}. Got ${req.step}, last step ${last.step}`,
        };
      }
      if (last.step === req.step) return { kind: 'same' };
    }
  }
  return { kind: 'above' };
}

interface Problem {
  code: RefusalCode;
  text: string;
}

/** Heights and rounds that must never be reserved (invariant 4). */
function rangeProblem(hrs: HRS, last: SignState, rules: ChainRules): Problem | undefined {
  // CometBFT's own ValidateBasic rejects height 0 as well as negative heights.
  if (hrs.height <= 0n) return { code: 'invalid_height', text: `invalid height ${hrs.height}` };
  if (hrs.height > MAX_HEIGHT) {
    return { code: 'height_out_of_range', text: `height ${hrs.height} is above the limit ${MAX_HEIGHT}` };
  }
  if (hrs.round < 0) return { code: 'invalid_round', text: `invalid round ${hrs.round}` };
  // Measured from the last reserved height, including the height `state init --height H` set,
  // so the limit holds from the very first signature.
  const limit = last.height + BigInt(rules.maxHeightJump);
  if (hrs.height > limit) {
    return {
      code: 'height_jump',
      text: `height jump too large. Got ${hrs.height}, last height ${last.height}, max jump ${rules.maxHeightJump}`,
    };
  }
  return undefined;
}

/** CometBFT's Proposal.ValidateBasic: pol_round is -1 or a round before this one. */
function polRoundProblem(proposal: Proposal): Problem | undefined {
  if (proposal.polRound < -1 || (proposal.polRound !== -1 && proposal.polRound >= proposal.round)) {
    return {
      code: 'invalid_pol_round',
      text: `invalid pol_round ${proposal.polRound} for round ${proposal.round}`,
    };
  }
  return undefined;
}

function addressProblem(address: Uint8Array, rules: ChainRules): Problem | undefined {
  const want = rules.validatorAddress;
  if (want === undefined || address.length === 0 || bytesEqual(address, want)) return undefined;
  return {
    code: 'validator_address_mismatch',
    text: `validator address mismatch: got ${boundText(toHexUpper(address), 64)}, want ${toHexUpper(want)}`,
  };
}

/** The sign bytes, or the refusal when the request cannot be canonicalised. */
function signBytesOf(kind: 'vote' | 'proposal', build: () => SignBytesPair): SignBytesPair | Problem {
  try {
    return build();
  } catch (err) {
    if (err instanceof CodecError) {
      return { code: 'invalid_field', text: `error signing ${kind}: ${boundText(err.message)}` };
    }
    throw err;
  }
}

/** The FilePV step of a vote type, or `undefined` for a type that is not a vote (spec §7.1). */
export function voteStep(type: number): number | undefined {
  if (type === SignedMsgType.Prevote) return Step.Prevote;
  if (type === SignedMsgType.Precommit) return Step.Precommit;
  return undefined;
}

/**
 * What to do about a vote's extension (spec §7.2 step 3, §10.1).
 * - `sign`: sign VoteExtensionSignBytes and return `extension_signature` (a node with extensions
 *   enabled panics on a non-nil precommit without one).
 * - `forbid`: return no `extension_signature` (the node panics on one for a prevote or a nil
 *   precommit) and refuse a non-empty `extension`.
 * - `ignore`: return no `extension_signature`; a stray `extension` is not an error.
 */
export type ExtensionPolicy = 'sign' | 'forbid' | 'ignore';

/** The extension policy for `vote` under `protocol` (v1.0: honouring `skip_extension_signing`). */
export function extensionPolicy(
  protocol: ProtocolVersion,
  vote: Vote,
  skipExtensionSigning: boolean,
): ExtensionPolicy {
  switch (protocol) {
    case 'v0.34':
    case 'v0.37':
      return 'ignore';
    case 'v1.0':
      if (skipExtensionSigning) return 'ignore';
      return nonNilPrecommit(vote) ? 'sign' : 'forbid';
    case 'v0.38':
      return nonNilPrecommit(vote) ? 'sign' : 'forbid';
  }
}

function nonNilPrecommit(vote: Vote): boolean {
  return vote.type === SignedMsgType.Precommit && !isZeroBlockId(vote.blockId);
}

/**
 * Invariant 5: may the store's `observed` state replace the `known` one? Only if it is above it;
 * or the very same reservation (same HRS, same sign and extension bytes; a signature may have
 * been recorded meanwhile); or the same HRS with no sign bytes at all, which an operator's
 * `state import` of the last signed height/round/step leaves (it allows strictly less than the
 * known reservation: nothing at this HRS, only above it). Anything else means the store went
 * backwards (a restored backup, a forced import, another writer): that stops signing instead of
 * becoming a new baseline.
 */
export function checkAdvance(
  known: SignState,
  observed: SignState,
): { ok: true } | { ok: false; text: string } {
  const order = compareHRS(observed, known);
  const sameReservation =
    bytesEqual(observed.signBytes, known.signBytes) &&
    bytesEqual(observed.extensionSignBytes, known.extensionSignBytes);
  const bare = observed.signBytes.length === 0 && observed.extensionSignBytes.length === 0;
  if (order > 0 || (order === 0 && (sameReservation || bare))) return { ok: true };
  return {
    ok: false,
    text:
      `store state went backwards: ${observed.height}/${observed.round}/${observed.step} ` +
      `after ${known.height}/${known.round}/${known.step}`,
  };
}
