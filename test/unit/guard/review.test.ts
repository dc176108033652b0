/**
 * Adversarial tests from the security review of the signing path: every call of the signer must
 * be over bytes the store had reserved at that moment, vote-extension sign bytes included
 * (ARCHITECTURE §2, invariants 1 and 2).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bytesToHex } from '@noble/hashes/utils.js';
import { voteExtensionSignBytes, voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import type { Vote } from '../../../src/cometbft/types.ts';
import { verifySignature } from '../../../src/cometbft/verify.ts';
import { ChainGuard } from '../../../src/guard/chain-guard.ts';
import type { Signer } from '../../../src/guard/signer.ts';
import {
  blockId,
  CHAIN_ID,
  freshStore,
  makeGuard,
  proposal,
  proposalRequest,
  replyProposal,
  replyVote,
  SEED,
  ts,
  vote,
  voteRequest,
} from '../../helpers/guard-fixtures.ts';
import { InMemorySigner } from '../../helpers/memory-signer.ts';
import type { InMemorySignStateStore } from '../../helpers/memory-store.ts';

const EMPTY = new Uint8Array();
const precommit = (over: Partial<Vote> = {}) => vote({ type: 2, ...over });
const CONFLICTING_EXTENSION = 'error signing vote: conflicting vote extension';

/**
 * A signer that records, for every call, whether its message was reserved in `store` at that
 * moment (as the vote/proposal sign bytes or as the extension sign bytes of any state so far).
 */
function auditingSigner(store: InMemorySignStateStore): { signer: Signer; unreserved: string[] } {
  const inner = InMemorySigner.ed25519(SEED);
  const unreserved: string[] = [];
  return {
    unreserved,
    signer: {
      pubKey: inner.pubKey,
      async sign(message: Uint8Array): Promise<Uint8Array> {
        const hex = bytesToHex(message);
        const reserved = store
          .history(CHAIN_ID)
          .some((s) => bytesToHex(s.signBytes) === hex || bytesToHex(s.extensionSignBytes) === hex);
        if (!reserved) unreserved.push(hex);
        return inner.sign(message);
      },
    },
  };
}

describe('vote extensions at one HRS', () => {
  it('a retry with another extension is refused and never reaches the signer', async () => {
    const fx = await makeGuard();
    const first = precommit({ extension: new Uint8Array([1]) });
    assert.equal(replyVote(await fx.guard.handle(voteRequest(first))).error, undefined);
    const calls = fx.signer.signed.length;
    const { vote: v, error } = replyVote(
      await fx.guard.handle(voteRequest(precommit({ extension: new Uint8Array([2, 2]) }))),
    );
    assert.equal(error, CONFLICTING_EXTENSION);
    assert.equal(v.extensionSignature.length, 0);
    assert.equal(fx.signer.signed.length, calls, 'no second extension signature at one HRS');
    assert.deepEqual(fx.store.peek(CHAIN_ID)?.extensionSignBytes, voteExtensionSignBytes(CHAIN_ID, first));
  });

  it('also when the other extension arrives with only a new timestamp', async () => {
    const fx = await makeGuard();
    await fx.guard.handle(voteRequest(precommit({ extension: new Uint8Array([1]) })));
    const { error } = replyVote(
      await fx.guard.handle(voteRequest(precommit({ extension: new Uint8Array([9]), timestamp: ts(5) }))),
    );
    assert.equal(error, CONFLICTING_EXTENSION);
  });

  it('a reservation without extension bytes never gets an extension signed at its HRS', async () => {
    // e.g. a state imported from priv_validator_state.json, which has no extension sign bytes
    const store = freshStore();
    const pc = precommit({ extension: new Uint8Array([3]) });
    store.setState(CHAIN_ID, {
      height: pc.height,
      round: pc.round,
      step: 3,
      signBytes: voteSignBytes(CHAIN_ID, pc),
      extensionSignBytes: EMPTY,
      signature: EMPTY,
    });
    const audit = auditingSigner(store);
    const guard = new ChainGuard({
      chainId: CHAIN_ID,
      protocol: 'v0.38',
      signer: audit.signer,
      store,
      maxHeightJump: 100,
    });
    await guard.init();
    const { error } = replyVote(await guard.handle(voteRequest(pc)));
    assert.equal(error, CONFLICTING_EXTENSION);
    assert.deepEqual(audit.unreserved, []);
  });

  it('the same extension after a crash between reserve and sign: both signatures, all reserved', async () => {
    const store = freshStore();
    const pc = precommit({ extension: new Uint8Array([4, 4]) });
    store.setState(CHAIN_ID, {
      height: pc.height,
      round: pc.round,
      step: 3,
      signBytes: voteSignBytes(CHAIN_ID, pc),
      extensionSignBytes: voteExtensionSignBytes(CHAIN_ID, pc),
      signature: EMPTY,
    });
    const audit = auditingSigner(store);
    const guard = new ChainGuard({
      chainId: CHAIN_ID,
      protocol: 'v0.38',
      signer: audit.signer,
      store,
      maxHeightJump: 100,
    });
    await guard.init();
    const { vote: v, error } = replyVote(await guard.handle(voteRequest({ ...pc, timestamp: ts(9) })));
    assert.equal(error, undefined);
    assert.deepEqual(v.timestamp, pc.timestamp, 'the reserved timestamp');
    assert.ok(verifySignature(audit.signer.pubKey, voteSignBytes(CHAIN_ID, pc), v.signature));
    assert.ok(
      verifySignature(audit.signer.pubKey, voteExtensionSignBytes(CHAIN_ID, pc), v.extensionSignature),
    );
    assert.deepEqual(audit.unreserved, []);
  });

  it('two KMS guards on one store: the second node cannot sign another extension at the HRS', async () => {
    const store = freshStore();
    const audit = auditingSigner(store);
    const [a, b] = [0, 1].map(
      () =>
        new ChainGuard({
          chainId: CHAIN_ID,
          protocol: 'v0.38',
          signer: audit.signer,
          store,
          maxHeightJump: 100,
        }),
    );
    await a!.init();
    await b!.init();
    assert.equal(
      replyVote(await a!.handle(voteRequest(precommit({ extension: new Uint8Array([1]) })))).error,
      undefined,
    );
    const { error } = replyVote(await b!.handle(voteRequest(precommit({ extension: new Uint8Array([2]) }))));
    assert.equal(error, CONFLICTING_EXTENSION);
    assert.deepEqual(audit.unreserved, []);
  });

  it('v1.0 skip_extension_signing on a reserved extension: vote re-signed, no extension signature', async () => {
    const fx = await makeGuard({ protocol: 'v1.0' });
    const pc = precommit({ extension: new Uint8Array([1]) });
    await fx.guard.handle(voteRequest(pc, CHAIN_ID, false));
    const { vote: v, error } = replyVote(
      await fx.guard.handle(voteRequest(precommit({ extension: new Uint8Array([2]) }), CHAIN_ID, true)),
    );
    assert.equal(error, undefined);
    assert.equal(v.extensionSignature.length, 0);
  });
});

describe('input bounds', () => {
  it('one request at the int64 maximum cannot disable the chain: refused, and later votes still sign', async () => {
    // Even with the jump limit as high as it goes, heights above 2^62 are refused outright.
    const fx = await makeGuard({ maxHeightJump: Number.MAX_SAFE_INTEGER });
    const top = vote({ height: (1n << 63n) - 1n, round: 2 ** 31 - 1 });
    const refused = replyVote(await fx.guard.handle(voteRequest(top)));
    assert.match(refused.error ?? '', /^error signing vote: height 9223372036854775807 is above the limit/);
    assert.equal(fx.decisions.at(-1)?.code, 'height_out_of_range');
    assert.equal(fx.store.peek(CHAIN_ID)?.height, 0n, 'nothing was reserved');
    assert.equal(replyVote(await fx.guard.handle(voteRequest(vote({ height: 11n })))).error, undefined);
    assert.equal(fx.signer.signed.length, 1);
  });

  it('with the default jump limit a far height is refused and the chain keeps signing', async () => {
    const fx = await makeGuard();
    const far = replyVote(await fx.guard.handle(voteRequest(vote({ height: 1n << 40n }))));
    assert.match(far.error ?? '', /^error signing vote: height jump too large/);
    assert.equal(replyVote(await fx.guard.handle(voteRequest(vote({ height: 12n })))).error, undefined);
  });

  it('refuses pol_round below -1 and heights/rounds that are not positive', async () => {
    const fx = await makeGuard();
    for (const p of [proposal({ polRound: -2 }), proposal({ height: 0n }), proposal({ round: -1 })]) {
      assert.match(replyProposal(await fx.guard.handle(proposalRequest(p))).error ?? '', /invalid/);
    }
    assert.match(replyVote(await fx.guard.handle(voteRequest(vote({ height: -1n })))).error ?? '', /invalid/);
    assert.equal(fx.signer.signed.length, 0);
  });

  it('a chain id that differs only in Unicode normalisation or case is another chain', async () => {
    const fx = await makeGuard();
    for (const chainId of [CHAIN_ID.toUpperCase(), `${CHAIN_ID}\u0000`, `${CHAIN_ID} `]) {
      assert.match(replyVote(await fx.guard.handle(voteRequest(vote(), chainId))).error ?? '', /mismatch/);
    }
    assert.equal(fx.signer.signed.length, 0);
  });

  it('a validator address of another key is refused before anything is reserved', async () => {
    const fx = await makeGuard();
    const { error } = replyVote(
      await fx.guard.handle(voteRequest(vote({ validatorAddress: new Uint8Array(20).fill(1) }))),
    );
    assert.match(error ?? '', /validator address mismatch/);
    assert.equal(fx.store.reserveCalls, 0);
  });

  it('a nil precommit never carries an extension signature, also on the same-HRS path', async () => {
    const fx = await makeGuard();
    const nil = precommit({ blockId: blockId(null) });
    for (const v of [nil, { ...nil, timestamp: ts(3) }]) {
      const reply = replyVote(await fx.guard.handle(voteRequest(v)));
      assert.equal(reply.error, undefined);
      assert.equal(reply.vote.extensionSignature.length, 0);
    }
  });
});
