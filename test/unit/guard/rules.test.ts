import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeMessage, zeroProposal, zeroVote } from '../../../src/cometbft/messages.ts';
import { proposalSignBytes, voteExtensionSignBytes, voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import type { PrivvalMessage, ProtocolVersion, Timestamp } from '../../../src/cometbft/types.ts';
import { verifySignature } from '../../../src/cometbft/verify.ts';
import { freshSignState, type SignState } from '../../../src/store/types.ts';
import {
  blockId,
  CHAIN_ID,
  type GuardFixture,
  hash32,
  makeGuard,
  proposal,
  proposalRequest,
  ts,
  vote,
  voteRequest,
} from '../../helpers/guard-fixtures.ts';
import { InMemorySigner } from '../../helpers/memory-signer.ts';

type Expect =
  | { refused: string | RegExp }
  | {
      outcome: 'signed' | 'resigned' | 'timestamp_only';
      /** an extension signature is expected (and verified over the request's extension) */
      extension?: boolean;
      /** the reply must carry this timestamp */
      timestamp?: Timestamp;
      /** the reply's signature must equal the one of this prior reply */
      sameSignatureAs?: number;
      /** how many times the signer is called for this request */
      signerCalls?: number;
    };

interface RuleCase {
  name: string;
  protocol?: ProtocolVersion;
  maxHeightJump?: number;
  checkValidatorAddress?: boolean;
  secp256k1?: boolean;
  /** the store's state before the guard starts */
  seed?: SignState;
  /** requests handled first; each must be signed */
  prior?: PrivvalMessage[];
  request: PrivvalMessage | ((fx: GuardFixture) => PrivvalMessage);
  expect: Expect;
}

const precommit = (over: Parameters<typeof vote>[0] = {}) => vote({ type: 2, ...over });
const REFUSED_EXTENSION =
  'error signing vote: unexpected vote extension - extensions are only allowed in non-nil precommits';

/** A state as if a precommit at `height`, round 0 had been signed. */
function seedAt(height: bigint): SignState {
  return {
    height,
    round: 0,
    step: 3,
    signBytes: voteSignBytes(CHAIN_ID, precommit({ height })),
    extensionSignBytes: new Uint8Array(),
    signature: new Uint8Array(64).fill(1),
  };
}

const CASES: RuleCase[] = [
  // --- FilePV CheckHRS (spec §7.1), exact texts -------------------------------------------
  {
    name: 'first prevote is signed',
    request: voteRequest(vote()),
    expect: { outcome: 'signed', signerCalls: 1 },
  },
  {
    name: 'first proposal is signed',
    request: proposalRequest(proposal()),
    expect: { outcome: 'signed', signerCalls: 1 },
  },
  {
    name: 'height regression',
    prior: [voteRequest(vote())],
    request: voteRequest(vote({ height: 9n })),
    expect: { refused: 'error signing vote: height regression. Got 9, last height 10' },
  },
  {
    name: 'round regression',
    prior: [voteRequest(vote({ round: 2 }))],
    request: voteRequest(precommit({ round: 1 })),
    expect: { refused: 'error signing vote: round regression at height 10. Got 1, last round 2' },
  },
  {
    name: 'step regression (prevote after precommit)',
    prior: [voteRequest(precommit())],
    request: voteRequest(vote()),
    expect: { refused: 'error signing vote: step regression at height 10 round 0. Got 2, last step 3' },
  },
  {
    name: 'step regression (proposal after prevote)',
    prior: [voteRequest(vote())],
    request: proposalRequest(proposal()),
    expect: { refused: 'error signing proposal: step regression at height 10 round 0. Got 1, last step 2' },
  },
  {
    name: 'proposal height regression',
    prior: [proposalRequest(proposal())],
    request: proposalRequest(proposal({ height: 9n })),
    expect: { refused: 'error signing proposal: height regression. Got 9, last height 10' },
  },
  {
    name: 'lower step in a higher round is allowed',
    prior: [voteRequest(precommit())],
    request: voteRequest(vote({ round: 1 })),
    expect: { outcome: 'signed' },
  },
  {
    name: 'lower round in a higher height is allowed',
    prior: [voteRequest(precommit({ round: 5 }))],
    request: proposalRequest(proposal({ height: 11n })),
    expect: { outcome: 'signed' },
  },
  {
    name: 'prevote after proposal in the same round',
    prior: [proposalRequest(proposal())],
    request: voteRequest(vote()),
    expect: { outcome: 'signed' },
  },
  {
    name: 'same HRS, identical vote: stored signature, no HSM call',
    prior: [voteRequest(vote())],
    request: voteRequest(vote()),
    expect: { outcome: 'resigned', sameSignatureAs: 0, signerCalls: 0 },
  },
  {
    name: 'same HRS, identical proposal: stored signature',
    prior: [proposalRequest(proposal())],
    request: proposalRequest(proposal()),
    expect: { outcome: 'resigned', sameSignatureAs: 0, signerCalls: 0 },
  },
  {
    name: 'same HRS, vote differing in fields outside the sign bytes',
    prior: [voteRequest(vote())],
    request: voteRequest(vote({ validatorIndex: 4 })),
    expect: { outcome: 'resigned', sameSignatureAs: 0, signerCalls: 0 },
  },
  {
    name: 'same HRS, vote differing only in timestamp: stored signature and timestamp',
    prior: [voteRequest(vote())],
    request: voteRequest(vote({ timestamp: ts(5000) })),
    expect: { outcome: 'timestamp_only', timestamp: ts(), sameSignatureAs: 0, signerCalls: 0 },
  },
  {
    name: 'same HRS, proposal differing only in timestamp: stored signature and timestamp',
    prior: [proposalRequest(proposal())],
    request: proposalRequest(proposal({ timestamp: ts(-3000) })),
    expect: { outcome: 'timestamp_only', timestamp: ts(), sameSignatureAs: 0, signerCalls: 0 },
  },
  {
    name: 'same HRS, vote for another block',
    prior: [voteRequest(vote())],
    request: voteRequest(vote({ blockId: blockId(9) })),
    expect: { refused: 'error signing vote: conflicting data' },
  },
  {
    name: 'same HRS, nil vote after a block vote',
    prior: [voteRequest(vote())],
    request: voteRequest(vote({ blockId: blockId(null), timestamp: ts(1) })),
    expect: { refused: 'error signing vote: conflicting data' },
  },
  {
    name: 'same HRS, proposal with another pol_round',
    prior: [proposalRequest(proposal({ round: 2, polRound: -1 }))],
    request: proposalRequest(proposal({ round: 2, polRound: 1 })),
    expect: { refused: 'error signing proposal: conflicting data' },
  },
  {
    name: 'same HRS, proposal for another block and timestamp',
    prior: [proposalRequest(proposal())],
    request: proposalRequest(proposal({ blockId: blockId(5), timestamp: ts(10) })),
    expect: { refused: 'error signing proposal: conflicting data' },
  },
  {
    name: 'same HRS without stored sign bytes',
    seed: { ...seedAt(10n), step: 2, signBytes: new Uint8Array(), signature: new Uint8Array() },
    request: voteRequest(vote()),
    expect: { refused: 'error signing vote: no SignBytes found' },
  },
  {
    name: 'secp256k1 key: signed and verified',
    secp256k1: true,
    request: voteRequest(precommit()),
    expect: { outcome: 'signed', extension: true, signerCalls: 2 },
  },

  // --- request validation -----------------------------------------------------------------
  {
    name: 'vote for another chain',
    request: voteRequest(vote(), 'other-chain'),
    expect: { refused: 'unable to sign vote: chain id mismatch: got other-chain, want test-chain' },
  },
  {
    name: 'proposal for another chain',
    request: proposalRequest(proposal(), 'other-chain'),
    expect: { refused: 'unable to sign proposal: chain id mismatch: got other-chain, want test-chain' },
  },
  {
    name: 'missing vote',
    request: voteRequest(undefined),
    expect: { refused: 'unable to sign vote: missing vote' },
  },
  {
    name: 'missing proposal',
    request: proposalRequest(undefined),
    expect: { refused: 'unable to sign proposal: missing proposal' },
  },
  ...[0, 3, 32].map(
    (type): RuleCase => ({
      name: `vote type ${type}`,
      request: voteRequest(vote({ type })),
      expect: { refused: `error signing vote: invalid vote type ${type}` },
    }),
  ),
  {
    name: 'negative vote height',
    request: voteRequest(vote({ height: -1n })),
    expect: { refused: 'error signing vote: invalid height -1' },
  },
  {
    name: 'zero vote height',
    request: voteRequest(vote({ height: 0n })),
    expect: { refused: 'error signing vote: invalid height 0' },
  },
  {
    name: 'negative vote round',
    request: voteRequest(vote({ round: -1 })),
    expect: { refused: 'error signing vote: invalid round -1' },
  },
  {
    name: 'negative proposal height',
    request: proposalRequest(proposal({ height: -5n })),
    expect: { refused: 'error signing proposal: invalid height -5' },
  },
  {
    name: 'negative proposal round',
    request: proposalRequest(proposal({ round: -1 })),
    expect: { refused: 'error signing proposal: invalid round -1' },
  },
  {
    name: 'pol_round below -1',
    request: proposalRequest(proposal({ round: 3, polRound: -2 })),
    expect: { refused: 'error signing proposal: invalid pol_round -2 for round 3' },
  },
  {
    name: 'pol_round equal to round (CometBFT rejects the proposal as invalid)',
    request: proposalRequest(proposal({ round: 3, polRound: 3 })),
    expect: { refused: 'error signing proposal: invalid pol_round 3 for round 3' },
  },
  {
    name: 'pol_round above round',
    request: proposalRequest(proposal({ round: 0, polRound: 4 })),
    expect: { refused: 'error signing proposal: invalid pol_round 4 for round 0' },
  },
  {
    name: 'pol_round within range',
    request: proposalRequest(proposal({ round: 3, polRound: 2 })),
    expect: { outcome: 'signed' },
  },
  {
    name: 'height beyond max_height_jump',
    maxHeightJump: 10,
    seed: seedAt(100n),
    request: voteRequest(vote({ height: 111n })),
    expect: { refused: 'error signing vote: height jump too large. Got 111, last height 100, max jump 10' },
  },
  {
    name: 'proposal beyond max_height_jump',
    maxHeightJump: 10,
    seed: seedAt(100n),
    request: proposalRequest(proposal({ height: 200n })),
    expect: {
      refused: 'error signing proposal: height jump too large. Got 200, last height 100, max jump 10',
    },
  },
  {
    name: 'height at max_height_jump',
    maxHeightJump: 10,
    seed: seedAt(100n),
    request: voteRequest(vote({ height: 110n })),
    expect: { outcome: 'signed' },
  },
  {
    name: 'max_height_jump holds from the first signature: a fresh state at height 0 is the baseline',
    maxHeightJump: 10,
    request: voteRequest(vote({ height: 1_000_000n })),
    expect: { refused: 'error signing vote: height jump too large. Got 1000000, last height 0, max jump 10' },
  },
  {
    name: 'a state created at the chain height by state init --height is the baseline',
    maxHeightJump: 10,
    seed: freshSignState(999_995n),
    request: voteRequest(vote({ height: 1_000_000n })),
    expect: { outcome: 'signed' },
  },
  {
    name: 'wrong validator address',
    request: voteRequest(vote({ validatorAddress: new Uint8Array(20).fill(0xab) })),
    expect: { refused: /^error signing vote: validator address mismatch: got (AB){20}, want [0-9A-F]{40}$/ },
  },
  {
    name: 'validator address of the key',
    request: (fx) => voteRequest(vote({ validatorAddress: fx.address })),
    expect: { outcome: 'signed' },
  },
  {
    name: 'wrong validator address with the check disabled',
    checkValidatorAddress: false,
    request: voteRequest(vote({ validatorAddress: new Uint8Array(20).fill(0xab) })),
    expect: { outcome: 'signed' },
  },
  {
    name: 'block hash of 31 bytes',
    request: voteRequest(vote({ blockId: { ...blockId(1), hash: new Uint8Array(31) } })),
    expect: { refused: /^error signing vote: .+/ },
  },
  {
    name: 'part set header hash of 33 bytes',
    request: voteRequest(
      vote({ blockId: { hash: hash32(1), partSetHeader: { total: 1, hash: new Uint8Array(33) } } }),
    ),
    expect: { refused: /^error signing vote: .+/ },
  },
  {
    name: 'proposal block hash of 16 bytes',
    request: proposalRequest(proposal({ blockId: { ...blockId(1), hash: new Uint8Array(16) } })),
    expect: { refused: /^error signing proposal: .+/ },
  },
  {
    name: 'timestamp nanos out of range',
    request: voteRequest(vote({ timestamp: { seconds: 1n, nanos: 1_000_000_000 } })),
    expect: { refused: /^error signing vote: .+/ },
  },

  // --- vote extensions (spec §7.2 step 3, §10.1) --------------------------------------------
  {
    name: 'v0.38 non-nil precommit: extension signed, echoed extension dropped',
    request: voteRequest(precommit({ extension: new Uint8Array(9000).fill(5) })),
    expect: { outcome: 'signed', extension: true, signerCalls: 2 },
  },
  {
    name: 'v0.38 non-nil precommit with an empty extension: still signed',
    request: voteRequest(precommit()),
    expect: { outcome: 'signed', extension: true, signerCalls: 2 },
  },
  {
    name: 'v0.38 prevote with an extension',
    request: voteRequest(vote({ extension: new Uint8Array([1]) })),
    expect: { refused: REFUSED_EXTENSION },
  },
  {
    name: 'v0.38 nil precommit with an extension',
    request: voteRequest(precommit({ blockId: blockId(null), extension: new Uint8Array([1]) })),
    expect: { refused: REFUSED_EXTENSION },
  },
  {
    name: 'v0.38 nil precommit: no extension signature',
    request: voteRequest(precommit({ blockId: blockId(null) })),
    expect: { outcome: 'signed', extension: false, signerCalls: 1 },
  },
  {
    name: 'v0.38 prevote carrying an extension signature: never echoed',
    request: voteRequest(vote({ extensionSignature: new Uint8Array(64).fill(9) })),
    expect: { outcome: 'signed', extension: false },
  },
  {
    // FilePV would sign the new extension; CometKMS reserves extension sign bytes with the vote
    // (ARCHITECTURE §2 inv. 2) and never signs a second, different extension at one HRS.
    name: 'v0.38 same HRS with a new extension: refused, the reserved extension stays the only one',
    prior: [voteRequest(precommit({ extension: new Uint8Array([1]) }))],
    request: voteRequest(precommit({ extension: new Uint8Array([2, 2]) })),
    expect: { refused: 'error signing vote: conflicting vote extension' },
  },
  {
    name: 'v0.38 same HRS with the same extension: stored vote signature, extension signed again',
    prior: [voteRequest(precommit({ extension: new Uint8Array([2, 2]) }))],
    request: voteRequest(precommit({ extension: new Uint8Array([2, 2]) })),
    expect: { outcome: 'resigned', extension: true, sameSignatureAs: 0, signerCalls: 1 },
  },
  {
    name: 'v0.38 same HRS, timestamp only, with extension',
    prior: [voteRequest(precommit({ extension: new Uint8Array([1]) }))],
    request: voteRequest(precommit({ extension: new Uint8Array([1]), timestamp: ts(77) })),
    expect: {
      outcome: 'timestamp_only',
      extension: true,
      timestamp: ts(),
      sameSignatureAs: 0,
      signerCalls: 1,
    },
  },
  {
    name: 'v1.0 non-nil precommit, extensions on: signed',
    protocol: 'v1.0',
    request: voteRequest(precommit({ extension: new Uint8Array([3]) }), CHAIN_ID, false),
    expect: { outcome: 'signed', extension: true, signerCalls: 2 },
  },
  {
    name: 'v1.0 non-nil precommit, skip_extension_signing: no extension signature',
    protocol: 'v1.0',
    request: voteRequest(precommit(), CHAIN_ID, true),
    expect: { outcome: 'signed', extension: false, signerCalls: 1 },
  },
  {
    name: 'v1.0 prevote with a stray extension, skip_extension_signing: not an error',
    protocol: 'v1.0',
    request: voteRequest(vote({ extension: new Uint8Array([1]) }), CHAIN_ID, true),
    expect: { outcome: 'signed', extension: false },
  },
  {
    name: 'v1.0 prevote with an extension, extensions on',
    protocol: 'v1.0',
    request: voteRequest(vote({ extension: new Uint8Array([1]) }), CHAIN_ID, false),
    expect: { refused: REFUSED_EXTENSION },
  },
  ...(['v0.34', 'v0.37'] as const).map(
    (protocol): RuleCase => ({
      name: `${protocol} non-nil precommit: no extensions at all`,
      protocol,
      request: voteRequest(precommit({ extension: new Uint8Array([1]) })),
      expect: { outcome: 'signed', extension: false, signerCalls: 1 },
    }),
  ),
];

/** The request's vote or proposal and its sign bytes under the reply's timestamp. */
function signedBytesOf(
  request: PrivvalMessage,
  reply: PrivvalMessage,
): { bytes: Uint8Array; signature: Uint8Array } {
  if (reply.kind === 'signedVoteResponse') {
    return { bytes: voteSignBytes(CHAIN_ID, reply.vote), signature: reply.vote.signature };
  }
  if (reply.kind === 'signedProposalResponse') {
    return { bytes: proposalSignBytes(CHAIN_ID, reply.proposal), signature: reply.proposal.signature };
  }
  throw new Error(`no signature in ${reply.kind} for ${request.kind}`);
}

function errorOf(reply: PrivvalMessage): string | undefined {
  return 'error' in reply ? reply.error?.description : undefined;
}

async function run(c: RuleCase): Promise<void> {
  const signer = c.secp256k1 ? InMemorySigner.secp256k1(new Uint8Array(32).fill(3)) : undefined;
  const fx = await makeGuard({
    ...(c.protocol !== undefined && { protocol: c.protocol }),
    ...(c.maxHeightJump !== undefined && { maxHeightJump: c.maxHeightJump }),
    ...(c.checkValidatorAddress !== undefined && { checkValidatorAddress: c.checkValidatorAddress }),
    ...(signer !== undefined && { signer }),
  });
  if (c.seed !== undefined) {
    fx.store.setState(CHAIN_ID, c.seed);
    await fx.guard.init();
  }
  const priorReplies: PrivvalMessage[] = [];
  for (const p of c.prior ?? []) {
    const reply = await fx.guard.handle(p);
    assert.equal(errorOf(reply), undefined, 'prior request must be signed');
    priorReplies.push(reply);
  }
  const request = typeof c.request === 'function' ? c.request(fx) : c.request;
  const storeBefore = fx.store.peek(CHAIN_ID);
  const callsBefore = fx.signer.signed.length;
  const reply = await fx.guard.handle(request);
  const calls = fx.signer.signed.length - callsBefore;
  const decision = fx.decisions.at(-1);

  if ('refused' in c.expect) {
    const description = errorOf(reply);
    assert.ok(description !== undefined, `expected a refusal, got ${JSON.stringify(reply.kind)}`);
    if (typeof c.expect.refused === 'string') assert.equal(description, c.expect.refused);
    else assert.match(description, c.expect.refused);
    if (reply.kind === 'signedVoteResponse') assert.deepEqual(reply.vote, zeroVote());
    else if (reply.kind === 'signedProposalResponse') assert.deepEqual(reply.proposal, zeroProposal());
    else assert.fail(`unexpected reply kind ${reply.kind}`);
    assert.equal(calls, 0, 'a refused request never reaches the signer');
    assert.deepEqual(fx.store.peek(CHAIN_ID), storeBefore, 'a refused request never changes the store');
    assert.equal(decision?.outcome, 'refused');
    assert.equal(decision?.reason, description);
    return;
  }

  const expect = c.expect;
  assert.equal(errorOf(reply), undefined);
  assert.ok(encodeMessage(reply, c.protocol ?? 'v0.38').length <= 10240, 'reply within the 10240-byte limit');
  const { bytes, signature } = signedBytesOf(request, reply);
  assert.ok(verifySignature(fx.signer.pubKey, bytes, signature), 'signature must verify over the reply');
  assert.equal(decision?.outcome, expect.outcome);
  if (expect.signerCalls !== undefined) assert.equal(calls, expect.signerCalls);
  if (expect.sameSignatureAs !== undefined) {
    const prior = priorReplies[expect.sameSignatureAs];
    assert.ok(prior !== undefined);
    assert.deepEqual(signature, signedBytesOf(request, prior).signature);
  }
  // The store holds this HRS with exactly the bytes that were signed.
  const stored = fx.store.peek(CHAIN_ID);
  assert.deepEqual(stored?.signBytes, bytes);
  assert.deepEqual(stored?.signature, signature);

  if (reply.kind === 'signedVoteResponse' && request.kind === 'signVoteRequest' && request.vote) {
    if (expect.timestamp !== undefined) assert.deepEqual(reply.vote.timestamp, expect.timestamp);
    else assert.deepEqual(reply.vote.timestamp, request.vote.timestamp);
    assert.equal(reply.vote.extension.length, 0, 'the echoed extension is dropped');
    if (expect.extension === true) {
      const extBytes = voteExtensionSignBytes(CHAIN_ID, request.vote);
      assert.ok(verifySignature(fx.signer.pubKey, extBytes, reply.vote.extensionSignature));
    } else {
      assert.equal(reply.vote.extensionSignature.length, 0, 'no extension signature');
    }
  }
  if (reply.kind === 'signedProposalResponse' && request.kind === 'signProposalRequest' && request.proposal) {
    assert.deepEqual(reply.proposal.timestamp, expect.timestamp ?? request.proposal.timestamp);
  }
}

describe('ChainGuard rules', () => {
  for (const c of CASES) it(c.name, () => run(c));
});
