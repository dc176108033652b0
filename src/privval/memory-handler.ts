/**
 * A small in-memory signing handler for transport tests, simulations and benchmarks.
 *
 * It answers like CometBFT's reference handler (spec §8) with a software ed25519 key and a
 * minimal FilePV-style HRS check kept in memory (spec §7). It is NOT the production signer: the
 * real path (reserve-before-sign guard, durable state, HSM) lives in guard/; nothing here
 * survives a restart.
 */

import { ed25519 } from '@noble/curves/ed25519.js';
import { zeroProposal, zeroVote } from '../cometbft/messages.ts';
import {
  isZeroBlockId,
  proposalSignBytes,
  voteExtensionSignBytes,
  voteSignBytes,
} from '../cometbft/signbytes.ts';
import {
  compareHRS,
  type HRS,
  type PrivvalMessage,
  type Proposal,
  type ProtocolVersion,
  type PubKey,
  SignedMsgType,
  Step,
  type Timestamp,
  type Vote,
} from '../cometbft/types.ts';
import type { RequestHandler } from './handler.ts';

/** Options of {@link InMemorySigningHandler}. */
export interface InMemorySigningHandlerOptions {
  chainId: string;
  version: ProtocolVersion;
  /** 32-byte ed25519 seed of the validator key. */
  privateKey: Uint8Array;
}

/** The last signed state, as FilePV keeps it. */
interface LastSign extends HRS {
  signBytes: Uint8Array;
  signature: Uint8Array;
  timestamp: Timestamp;
}

/** Signs votes and proposals for one chain with an in-memory ed25519 key and HRS check. */
export class InMemorySigningHandler implements RequestHandler {
  readonly pubKey: PubKey;
  private readonly seed: Uint8Array;
  private last: LastSign | undefined;
  /** Serialises requests: the HRS check and the state update must not interleave. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: InMemorySigningHandlerOptions) {
    if (opts.privateKey.length !== 32) throw new Error('ed25519 seed must be 32 bytes');
    this.seed = opts.privateKey.slice();
    this.pubKey = { type: 'ed25519', bytes: ed25519.getPublicKey(this.seed) };
  }

  handle(request: PrivvalMessage): Promise<PrivvalMessage> {
    const result = this.tail.then(() => this.dispatch(request));
    this.tail = result.catch(() => undefined);
    return result;
  }

  private dispatch(request: PrivvalMessage): PrivvalMessage {
    const { chainId } = this.opts;
    switch (request.kind) {
      case 'pubKeyRequest':
        if (request.chainId !== chainId) {
          return { kind: 'pubKeyResponse', error: { code: 0, description: 'unable to provide pubkey' } };
        }
        return { kind: 'pubKeyResponse', pubKey: this.pubKey };
      case 'signVoteRequest':
        if (request.chainId !== chainId || !request.vote) {
          return {
            kind: 'signedVoteResponse',
            vote: zeroVote(),
            error: { code: 0, description: 'unable to sign vote' },
          };
        }
        return this.signVote(request.vote, !request.skipExtensionSigning);
      case 'signProposalRequest':
        if (request.chainId !== chainId || !request.proposal) {
          return {
            kind: 'signedProposalResponse',
            proposal: zeroProposal(),
            error: { code: 0, description: 'unable to sign proposal' },
          };
        }
        return this.signProposal(request.proposal);
      case 'signBytesRequest':
        return { kind: 'signBytesResponse', signature: ed25519.sign(request.value, this.seed) };
      default:
        return { kind: 'empty' };
    }
  }

  private signVote(vote: Vote, signExtension: boolean): PrivvalMessage {
    const { chainId, version } = this.opts;
    const step =
      vote.type === SignedMsgType.Prevote
        ? Step.Prevote
        : vote.type === SignedMsgType.Precommit
          ? Step.Precommit
          : 0;
    const refuse = (description: string): PrivvalMessage => ({
      kind: 'signedVoteResponse',
      vote: zeroVote(),
      error: { code: 0, description: `error signing vote: ${description}` },
    });
    if (step === 0) return refuse(`invalid vote type ${vote.type}`);

    // Extensions exist from v0.38; v1.0 signs them only when the node asks (spec §7.2 step 3).
    let extensionSignature = new Uint8Array(0);
    if (version === 'v0.38' || (version === 'v1.0' && signExtension)) {
      if (vote.type === SignedMsgType.Precommit && !isZeroBlockId(vote.blockId)) {
        extensionSignature = ed25519.sign(voteExtensionSignBytes(chainId, vote), this.seed);
      } else if (vote.extension.length > 0) {
        return refuse('unexpected vote extension - extensions are only allowed in non-nil precommits');
      }
    }

    const outcome = this.decide({ height: vote.height, round: vote.round, step }, vote.timestamp, (ts) =>
      voteSignBytes(chainId, { ...vote, timestamp: ts }),
    );
    if ('error' in outcome) return refuse(outcome.error);
    return {
      kind: 'signedVoteResponse',
      vote: { ...vote, timestamp: outcome.timestamp, signature: outcome.signature, extensionSignature },
    };
  }

  private signProposal(proposal: Proposal): PrivvalMessage {
    const { chainId } = this.opts;
    const outcome = this.decide(
      { height: proposal.height, round: proposal.round, step: Step.Propose },
      proposal.timestamp,
      (ts) => proposalSignBytes(chainId, { ...proposal, timestamp: ts }),
    );
    if ('error' in outcome) {
      return {
        kind: 'signedProposalResponse',
        proposal: zeroProposal(),
        error: { code: 0, description: `error signing proposal: ${outcome.error}` },
      };
    }
    return {
      kind: 'signedProposalResponse',
      proposal: { ...proposal, timestamp: outcome.timestamp, signature: outcome.signature },
    };
  }

  /**
   * FilePV's CheckHRS and same-HRS rules (spec §7.1, §7.2 step 4). `signBytesAt(ts)` gives the
   * sign bytes of the request with timestamp `ts`: a request whose bytes equal the stored ones
   * once the stored timestamp is put in differs only in its timestamp.
   */
  private decide(
    hrs: HRS,
    timestamp: Timestamp,
    signBytesAt: (ts: Timestamp) => Uint8Array,
  ): { signature: Uint8Array; timestamp: Timestamp } | { error: string } {
    const last = this.last;
    if (last) {
      const cmp = compareHRS(hrs, last);
      if (cmp < 0) return { error: `HRS regression: got ${fmt(hrs)}, last ${fmt(last)}` };
      if (cmp === 0) {
        if (equalBytes(signBytesAt(timestamp), last.signBytes))
          return { signature: last.signature, timestamp };
        if (equalBytes(signBytesAt(last.timestamp), last.signBytes)) {
          return { signature: last.signature, timestamp: last.timestamp };
        }
        return { error: 'conflicting data' };
      }
    }
    const signBytes = signBytesAt(timestamp);
    const signature = ed25519.sign(signBytes, this.seed);
    this.last = { ...hrs, signBytes, signature, timestamp };
    return { signature, timestamp };
  }
}

function fmt(h: HRS): string {
  return `${h.height}/${h.round}/${h.step}`;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
