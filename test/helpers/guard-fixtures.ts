import { validatorAddress } from '../../src/cometbft/keys.ts';
import type {
  BlockID,
  PrivvalMessage,
  Proposal,
  ProtocolVersion,
  Timestamp,
  Vote,
} from '../../src/cometbft/types.ts';
import { CONFIG_DEFAULTS } from '../../src/config/load.ts';
import { ChainGuard, type ChainGuardOptions } from '../../src/guard/chain-guard.ts';
import type { GuardDecision } from '../../src/guard/decision.ts';
import { freshSignState } from '../../src/store/types.ts';
import { InMemorySigner } from './memory-signer.ts';
import { InMemorySignStateStore } from './memory-store.ts';

/** The chain id every guard fixture serves. */
export const CHAIN_ID = 'test-chain';

/** A fixed ed25519 seed so that signatures are reproducible. */
export const SEED = new Uint8Array(32).fill(7);

/** 32 bytes of `fill`. */
export function hash32(fill: number): Uint8Array {
  return new Uint8Array(32).fill(fill);
}

/** A BlockID whose hashes are filled with `fill`, or the zero (nil) BlockID for `null`. */
export function blockId(fill: number | null): BlockID {
  if (fill === null) return { hash: new Uint8Array(), partSetHeader: { total: 0, hash: new Uint8Array() } };
  return { hash: hash32(fill), partSetHeader: { total: 1, hash: hash32(fill + 1) } };
}

/** 2024-01-01T00:00:00Z plus `offsetMs`. */
export function ts(offsetMs = 0): Timestamp {
  const ms = 1_704_067_200_000 + offsetMs;
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}

/** A prevote at height 10, round 0 for block 1, overridable field by field. */
export function vote(over: Partial<Vote> = {}): Vote {
  return {
    type: 1,
    height: 10n,
    round: 0,
    blockId: blockId(1),
    timestamp: ts(),
    validatorAddress: new Uint8Array(),
    validatorIndex: 0,
    signature: new Uint8Array(),
    extension: new Uint8Array(),
    extensionSignature: new Uint8Array(),
    ...over,
  };
}

/** A proposal at height 10, round 0 for block 1 without POL, overridable field by field. */
export function proposal(over: Partial<Proposal> = {}): Proposal {
  return {
    type: 32,
    height: 10n,
    round: 0,
    polRound: -1,
    blockId: blockId(1),
    timestamp: ts(),
    signature: new Uint8Array(),
    ...over,
  };
}

/** A SignVoteRequest for `v` on {@link CHAIN_ID} unless told otherwise. */
export function voteRequest(
  v: Vote | undefined,
  chainId = CHAIN_ID,
  skipExtensionSigning = false,
): PrivvalMessage {
  return v === undefined
    ? { kind: 'signVoteRequest', chainId, skipExtensionSigning }
    : { kind: 'signVoteRequest', vote: v, chainId, skipExtensionSigning };
}

/** A SignProposalRequest for `p` on {@link CHAIN_ID} unless told otherwise. */
export function proposalRequest(p: Proposal | undefined, chainId = CHAIN_ID): PrivvalMessage {
  return p === undefined
    ? { kind: 'signProposalRequest', chainId }
    : { kind: 'signProposalRequest', proposal: p, chainId };
}

/** A guard wired to an in-memory store and signer, with its decisions collected. */
export interface GuardFixture {
  guard: ChainGuard;
  store: InMemorySignStateStore;
  signer: InMemorySigner;
  decisions: GuardDecision[];
  /** every onRecordFailure report, in order */
  recordFailures: string[];
  /** the key's validator address */
  address: Uint8Array;
}

/** Options of {@link makeGuard}: any ChainGuard option, plus a ready store or signer. */
export interface MakeGuardOptions
  extends Partial<
    Omit<ChainGuardOptions, 'store' | 'signer' | 'onDecision' | 'onRecordFailure' | 'protocol'>
  > {
  protocol?: ProtocolVersion;
  store?: InMemorySignStateStore;
  signer?: InMemorySigner;
}

/** A store holding the state `cometkms state init` creates for {@link CHAIN_ID} (height 0). */
export function freshStore(height = 0n): InMemorySignStateStore {
  const store = new InMemorySignStateStore();
  store.setState(CHAIN_ID, freshSignState(height));
  return store;
}

/**
 * Builds and initialises a guard (default: v0.38, ed25519 from {@link SEED}, a store with a fresh
 * state at height 0, max_height_jump 100 000).
 */
export async function makeGuard(options: MakeGuardOptions = {}): Promise<GuardFixture> {
  const { store = freshStore(), signer = InMemorySigner.ed25519(SEED), ...rest } = options;
  const decisions: GuardDecision[] = [];
  const recordFailures: string[] = [];
  const guard = new ChainGuard({
    chainId: CHAIN_ID,
    protocol: 'v0.38',
    maxHeightJump: CONFIG_DEFAULTS.maxHeightJump,
    ...rest,
    signer,
    store,
    onDecision: (d) => decisions.push(d),
    onRecordFailure: (reason) => recordFailures.push(reason),
  });
  await guard.init();
  return { guard, store, signer, decisions, recordFailures, address: validatorAddress(signer.pubKey) };
}

/** The vote of a SignedVoteResponse; throws on any other reply. */
export function replyVote(reply: PrivvalMessage): { vote: Vote; error?: string } {
  if (reply.kind !== 'signedVoteResponse') throw new Error(`expected signedVoteResponse, got ${reply.kind}`);
  return reply.error === undefined
    ? { vote: reply.vote }
    : { vote: reply.vote, error: reply.error.description };
}

/** The proposal of a SignedProposalResponse; throws on any other reply. */
export function replyProposal(reply: PrivvalMessage): { proposal: Proposal; error?: string } {
  if (reply.kind !== 'signedProposalResponse') {
    throw new Error(`expected signedProposalResponse, got ${reply.kind}`);
  }
  return reply.error === undefined
    ? { proposal: reply.proposal }
    : { proposal: reply.proposal, error: reply.error.description };
}
