import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { zeroVote } from '../../../src/cometbft/messages.ts';
import { proposalSignBytes, voteExtensionSignBytes, voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import type {
  BlockID,
  PrivvalMessage,
  Proposal,
  ProtocolVersion,
  Vote,
} from '../../../src/cometbft/types.ts';
import { verifySignature } from '../../../src/cometbft/verify.ts';
import { InMemorySigningHandler } from '../../../src/privval/memory-handler.ts';

const CHAIN = 'mem-chain';
const block: BlockID = {
  hash: new Uint8Array(32).fill(1),
  partSetHeader: { total: 1, hash: new Uint8Array(32).fill(2) },
};

function handler(version: ProtocolVersion = 'v0.38'): InMemorySigningHandler {
  return new InMemorySigningHandler({ chainId: CHAIN, version, privateKey: new Uint8Array(32).fill(9) });
}

function vote(
  type: number,
  height: bigint,
  round: number,
  seconds = 100n,
  extension = new Uint8Array(0),
): Vote {
  return { ...zeroVote(), type, height, round, blockId: block, timestamp: { seconds, nanos: 0 }, extension };
}

function req(v: Vote, skipExtensionSigning = false): PrivvalMessage {
  return { kind: 'signVoteRequest', vote: v, chainId: CHAIN, skipExtensionSigning };
}

async function signedVote(h: InMemorySigningHandler, m: PrivvalMessage): Promise<Vote> {
  const r = await h.handle(m);
  assert.equal(r.kind, 'signedVoteResponse');
  if (r.kind !== 'signedVoteResponse') throw new Error('unreachable');
  assert.equal(r.error, undefined);
  return r.vote;
}

async function refusal(h: InMemorySigningHandler, m: PrivvalMessage): Promise<string> {
  const r = await h.handle(m);
  assert.ok(r.kind === 'signedVoteResponse' || r.kind === 'signedProposalResponse');
  if (r.kind !== 'signedVoteResponse' && r.kind !== 'signedProposalResponse') throw new Error('unreachable');
  assert.ok(r.error, 'expected a refusal');
  return r.error.description;
}

describe('InMemorySigningHandler', () => {
  it('answers the pubkey request only for its chain', async () => {
    const h = handler();
    assert.deepEqual(await h.handle({ kind: 'pubKeyRequest', chainId: CHAIN }), {
      kind: 'pubKeyResponse',
      pubKey: h.pubKey,
    });
    const other = await h.handle({ kind: 'pubKeyRequest', chainId: 'other' });
    assert.equal(other.kind === 'pubKeyResponse' && other.error?.description, 'unable to provide pubkey');
  });

  it('signs a precommit and its extension with valid signatures', async () => {
    const h = handler();
    const v = vote(2, 1n, 0, 100n, Uint8Array.of(1, 2, 3));
    const out = await signedVote(h, req(v));
    assert.ok(verifySignature(h.pubKey, voteSignBytes(CHAIN, v), out.signature));
    assert.ok(verifySignature(h.pubKey, voteExtensionSignBytes(CHAIN, v), out.extensionSignature));
  });

  it('never returns an extension signature on a prevote, and none before v0.38', async () => {
    assert.equal((await signedVote(handler(), req(vote(1, 1n, 0)))).extensionSignature.length, 0);
    assert.equal((await signedVote(handler('v0.37'), req(vote(2, 1n, 0)))).extensionSignature.length, 0);
  });

  it('honours skip_extension_signing on v1.0', async () => {
    const out = await signedVote(handler('v1.0'), req(vote(2, 1n, 0), true));
    assert.equal(out.extensionSignature.length, 0);
  });

  it('returns the stored signature for an identical retry and the stored timestamp for a timestamp-only change', async () => {
    const h = handler();
    const first = await signedVote(h, req(vote(1, 3n, 0, 100n)));
    assert.deepEqual((await signedVote(h, req(vote(1, 3n, 0, 100n)))).signature, first.signature);
    const later = await signedVote(h, req(vote(1, 3n, 0, 200n)));
    assert.deepEqual(later.signature, first.signature);
    assert.equal(later.timestamp.seconds, 100n);
  });

  it('refuses conflicting data at the same HRS and any regression', async () => {
    const h = handler();
    await signedVote(h, req(vote(1, 3n, 1)));
    const nilVote = { ...vote(1, 3n, 1), blockId: zeroVote().blockId };
    assert.match(await refusal(h, req(nilVote)), /conflicting data/);
    assert.match(await refusal(h, req(vote(2, 3n, 0))), /regression/);
    assert.match(await refusal(h, req(vote(2, 2n, 5))), /regression/);
    await signedVote(h, req(vote(2, 3n, 1)));
  });

  it('refuses another chain and an extension on a prevote', async () => {
    const h = handler();
    assert.equal(
      await refusal(h, { ...req(vote(1, 1n, 0)), chainId: 'other' } as PrivvalMessage),
      'unable to sign vote',
    );
    assert.match(await refusal(h, req(vote(1, 1n, 0, 100n, Uint8Array.of(1)))), /unexpected vote extension/);
  });

  it('signs proposals with the same HRS rules', async () => {
    const h = handler();
    const p: Proposal = {
      type: 32,
      height: 4n,
      round: 0,
      polRound: -1,
      blockId: block,
      timestamp: { seconds: 5n, nanos: 0 },
      signature: new Uint8Array(0),
    };
    const r = await h.handle({ kind: 'signProposalRequest', proposal: p, chainId: CHAIN });
    assert.equal(r.kind, 'signedProposalResponse');
    if (r.kind !== 'signedProposalResponse') return;
    assert.ok(verifySignature(h.pubKey, proposalSignBytes(CHAIN, p), r.proposal.signature));
    const conflicting = { ...p, polRound: 0 };
    assert.match(
      await refusal(h, { kind: 'signProposalRequest', proposal: conflicting, chainId: CHAIN }),
      /conflicting data/,
    );
  });

  it('answers response-type messages with an empty Message', async () => {
    assert.deepEqual(await handler().handle({ kind: 'pingResponse' }), { kind: 'empty' });
  });
});
