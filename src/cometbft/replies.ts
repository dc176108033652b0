import { zeroProposal, zeroVote } from './messages.ts';
import type { PrivvalMessage, PrivvalMessageKind } from './types.ts';

/** "Try again": an empty Message makes the node re-send the same request (spec §1.2). */
export function tryAgain(): PrivvalMessage {
  return { kind: 'empty' };
}

/** A final refusal of a vote: a zero Vote and a RemoteSignerError with code 0 (spec §8). */
export function refusedVote(description: string): PrivvalMessage {
  return { kind: 'signedVoteResponse', vote: zeroVote(), error: { code: 0, description } };
}

/** A final refusal of a proposal: a zero Proposal and a RemoteSignerError with code 0. */
export function refusedProposal(description: string): PrivvalMessage {
  return { kind: 'signedProposalResponse', proposal: zeroProposal(), error: { code: 0, description } };
}

/** A refused PubKeyRequest: no key, a RemoteSignerError with code 0. */
export function refusedPubKey(description: string): PrivvalMessage {
  return { kind: 'pubKeyResponse', error: { code: 0, description } };
}

/** A refused SignBytesRequest: no signature, a RemoteSignerError with code 0. */
export function refusedSignBytes(description: string): PrivvalMessage {
  return { kind: 'signBytesResponse', signature: new Uint8Array(), error: { code: 0, description } };
}

/**
 * The final refusal answering a request of `kind`, or undefined when `kind` is not a request
 * that gets one (Ping, responses).
 */
export function refusalFor(kind: PrivvalMessageKind, description: string): PrivvalMessage | undefined {
  switch (kind) {
    case 'pubKeyRequest':
      return refusedPubKey(description);
    case 'signVoteRequest':
      return refusedVote(description);
    case 'signProposalRequest':
      return refusedProposal(description);
    case 'signBytesRequest':
      return refusedSignBytes(description);
    default:
      return undefined;
  }
}

/**
 * Throws unless `reply` is one of the three legal reply shapes: a response carrying its payload
 * (signature or key) and no error, a response carrying an error, or a non-response message. A
 * response of the expected type with neither is taken by the node as success (and a v0.38 node
 * then panics), so this must never go out.
 */
export function assertWellFormedReply(reply: PrivvalMessage): void {
  const shape = payloadAndError(reply);
  if (shape !== undefined && shape.hasError === shape.hasPayload) {
    throw new Error(`malformed ${reply.kind}: it must carry exactly one of a payload and an error`);
  }
}

/** Whether a response carries its payload and whether it carries an error; undefined otherwise. */
function payloadAndError(reply: PrivvalMessage): { hasPayload: boolean; hasError: boolean } | undefined {
  switch (reply.kind) {
    case 'signedVoteResponse':
      return { hasPayload: reply.vote.signature.length > 0, hasError: reply.error !== undefined };
    case 'signedProposalResponse':
      return { hasPayload: reply.proposal.signature.length > 0, hasError: reply.error !== undefined };
    case 'signBytesResponse':
      return { hasPayload: reply.signature.length > 0, hasError: reply.error !== undefined };
    case 'pubKeyResponse':
      return { hasPayload: reply.pubKey !== undefined, hasError: reply.error !== undefined };
    default:
      return undefined;
  }
}
