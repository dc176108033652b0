import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { proposalSignBytes, voteExtensionSignBytes, voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import type { HRS } from '../../../src/cometbft/types.ts';
import { verifySignature } from '../../../src/cometbft/verify.ts';
import type { ReserveResult, SignState } from '../../../src/store/types.ts';
import {
  blockId,
  CHAIN_ID,
  freshStore,
  makeGuard,
  proposal,
  proposalRequest,
  replyProposal,
  replyVote,
  ts,
  vote,
  voteRequest,
} from '../../helpers/guard-fixtures.ts';
import { InMemorySignStateStore } from '../../helpers/memory-store.ts';

const EMPTY = new Uint8Array();

/** The state a crash leaves behind after reserving `bytes` at `hrs` and before recording. */
function reservation(hrs: HRS, bytes: Uint8Array, extensionSignBytes = EMPTY): SignState {
  return { ...hrs, signBytes: bytes, extensionSignBytes, signature: EMPTY };
}

describe('crash between reserve and sign', () => {
  const reserved = vote({ timestamp: ts(0) });
  const reservedBytes = voteSignBytes(CHAIN_ID, reserved);

  async function afterCrash() {
    const store = new InMemorySignStateStore();
    store.setState(CHAIN_ID, reservation({ height: 10n, round: 0, step: 2 }, reservedBytes));
    return makeGuard({ store });
  }

  it('an identical retry gets a valid signature over the reserved bytes, recorded', async () => {
    const fx = await afterCrash();
    const { vote: v, error } = replyVote(await fx.guard.handle(voteRequest(reserved)));
    assert.equal(error, undefined);
    assert.ok(verifySignature(fx.signer.pubKey, reservedBytes, v.signature));
    assert.deepEqual(fx.signer.signed, [reservedBytes]);
    assert.deepEqual(fx.store.peek(CHAIN_ID)?.signature, v.signature);
    assert.equal(fx.decisions.at(-1)?.outcome, 'resigned');
  });

  it('a timestamp-only retry gets the reserved timestamp and a signature valid for it', async () => {
    const fx = await afterCrash();
    const { vote: v, error } = replyVote(await fx.guard.handle(voteRequest(vote({ timestamp: ts(2500) }))));
    assert.equal(error, undefined);
    assert.deepEqual(v.timestamp, ts(0));
    assert.deepEqual(voteSignBytes(CHAIN_ID, v), reservedBytes);
    assert.ok(verifySignature(fx.signer.pubKey, reservedBytes, v.signature));
    assert.deepEqual(fx.signer.signed, [reservedBytes], 'only the reserved bytes are signed');
    assert.equal(fx.decisions.at(-1)?.outcome, 'timestamp_only');
  });

  it('a retry for another block is conflicting data and signs nothing', async () => {
    const fx = await afterCrash();
    const { error } = replyVote(await fx.guard.handle(voteRequest(vote({ blockId: blockId(4) }))));
    assert.equal(error, 'error signing vote: conflicting data');
    assert.equal(fx.signer.signed.length, 0);
    assert.deepEqual(fx.store.peek(CHAIN_ID)?.signBytes, reservedBytes);
  });

  it('a proposal reservation is completed the same way', async () => {
    const p = proposal({ round: 1 });
    const bytes = proposalSignBytes(CHAIN_ID, p);
    const store = new InMemorySignStateStore();
    store.setState(CHAIN_ID, reservation({ height: 10n, round: 1, step: 1 }, bytes));
    const fx = await makeGuard({ store });
    const { proposal: got } = replyProposal(
      await fx.guard.handle(proposalRequest({ ...p, timestamp: ts(9) })),
    );
    assert.deepEqual(got.timestamp, p.timestamp);
    assert.ok(verifySignature(fx.signer.pubKey, bytes, got.signature));
  });

  it('a stored signature that does not verify is replaced by one over the reserved bytes', async () => {
    const store = new InMemorySignStateStore();
    store.setState(CHAIN_ID, {
      ...reservation({ height: 10n, round: 0, step: 2 }, reservedBytes),
      signature: new Uint8Array(64).fill(1),
    });
    const fx = await makeGuard({ store });
    const { vote: v } = replyVote(await fx.guard.handle(voteRequest(reserved)));
    assert.ok(verifySignature(fx.signer.pubKey, reservedBytes, v.signature));
    assert.deepEqual(fx.signer.signed, [reservedBytes]);
  });
});

describe('store faults', () => {
  it('reserve throws: empty Message, signer never called, a later retry signs', async () => {
    const fx = await makeGuard();
    fx.store.injectReserveFault('throw');
    assert.deepEqual(await fx.guard.handle(voteRequest(vote())), { kind: 'empty' });
    assert.equal(fx.signer.signed.length, 0);
    assert.equal(fx.store.peek(CHAIN_ID)?.height, 0n);
    assert.equal(fx.decisions.at(-1)?.outcome, 'retry');
    assert.match(fx.decisions.at(-1)?.reason ?? '', /reserve failed/);

    const { vote: v } = replyVote(await fx.guard.handle(voteRequest(vote())));
    assert.ok(verifySignature(fx.signer.pubKey, voteSignBytes(CHAIN_ID, vote()), v.signature));
  });

  it('reserve applied, reply reported as a conflict with our own reservation: signed once', async () => {
    const fx = await makeGuard();
    fx.store.injectReserveFault('apply-then-conflict');
    const { vote: v, error } = replyVote(await fx.guard.handle(voteRequest(vote())));
    assert.equal(error, undefined);
    const bytes = voteSignBytes(CHAIN_ID, vote());
    assert.ok(verifySignature(fx.signer.pubKey, bytes, v.signature));
    assert.deepEqual(fx.signer.signed, [bytes]);
    assert.equal(fx.store.reserveCalls, 1);
    assert.deepEqual(fx.store.peek(CHAIN_ID)?.signature, v.signature);
  });

  it('reserve applied but its reply lost: empty Message, then the retry signs the reservation once', async () => {
    const fx = await makeGuard();
    fx.store.injectReserveFault('apply-then-throw');
    assert.deepEqual(await fx.guard.handle(voteRequest(vote())), { kind: 'empty' });
    assert.equal(fx.signer.signed.length, 0);
    // A different block at the same HRS is refused: the lost reservation still binds.
    const conflicting = replyVote(await fx.guard.handle(voteRequest(vote({ blockId: blockId(3) }))));
    assert.equal(conflicting.error, 'error signing vote: conflicting data');
    const { vote: v } = replyVote(await fx.guard.handle(voteRequest(vote())));
    assert.ok(verifySignature(fx.signer.pubKey, voteSignBytes(CHAIN_ID, vote()), v.signature));
    assert.equal(fx.signer.signed.length, 1);
  });

  it('recordSignature throws: the signature is still returned and nothing else can be signed there', async () => {
    const fx = await makeGuard();
    fx.store.failNextRecord();
    const first = replyVote(await fx.guard.handle(voteRequest(vote())));
    const bytes = voteSignBytes(CHAIN_ID, vote());
    assert.ok(verifySignature(fx.signer.pubKey, bytes, first.vote.signature));
    assert.match(fx.recordFailures.at(-1) ?? '', /signature not recorded/);
    assert.equal(fx.store.peek(CHAIN_ID)?.signature.length, 0);
    assert.deepEqual(fx.store.peek(CHAIN_ID)?.signBytes, bytes);

    const other = replyVote(await fx.guard.handle(voteRequest(vote({ blockId: blockId(8) }))));
    assert.equal(other.error, 'error signing vote: conflicting data');
    // An identical retry re-signs the reserved bytes (ed25519: the very same signature).
    const again = replyVote(await fx.guard.handle(voteRequest(vote())));
    assert.deepEqual(again.vote.signature, first.vote.signature);
    assert.deepEqual(fx.signer.signed, [bytes, bytes]);
    assert.deepEqual(fx.store.peek(CHAIN_ID)?.signature, first.vote.signature);
  });

  it('what must be durable before a return is not: no signature goes out, the retry signs the reservation', async () => {
    const fx = await makeGuard();
    fx.store.failNextReadyToReturn();
    const bytes = voteSignBytes(CHAIN_ID, vote());
    assert.deepEqual(await fx.guard.handle(voteRequest(vote())), { kind: 'empty' });
    assert.equal(fx.decisions.at(-1)?.outcome, 'retry');
    assert.match(fx.decisions.at(-1)?.reason ?? '', /durable before returning its signature.*not durable/);
    // Signed but never returned, and not recorded: the reservation alone binds the HRS.
    assert.deepEqual(fx.signer.signed, [bytes]);
    assert.equal(fx.store.peek(CHAIN_ID)?.signature.length, 0);
    const other = replyVote(await fx.guard.handle(voteRequest(vote({ blockId: blockId(8) }))));
    assert.equal(other.error, 'error signing vote: conflicting data');
    const again = replyVote(await fx.guard.handle(voteRequest(vote())));
    assert.ok(verifySignature(fx.signer.pubKey, bytes, again.vote.signature));
    assert.deepEqual(fx.store.peek(CHAIN_ID)?.signature, again.vote.signature);
  });

  it('a recorded signature is returned again only once the store says it may be', async () => {
    const fx = await makeGuard();
    const first = replyVote(await fx.guard.handle(voteRequest(vote())));
    const calls = fx.store.readyCalls;
    fx.store.failNextReadyToReturn();
    assert.deepEqual(await fx.guard.handle(voteRequest(vote())), { kind: 'empty' });
    assert.equal(fx.store.readyCalls, calls + 1);
    const again = replyVote(await fx.guard.handle(voteRequest(vote())));
    assert.deepEqual(again.vote.signature, first.vote.signature);
  });

  it('a second writer moved the state: decides again against it', async () => {
    const store = freshStore();
    const a = await makeGuard({ store });
    const b = await makeGuard({ store });
    replyVote(await a.guard.handle(voteRequest(vote({ height: 20n }))));
    // b still believes the state is initial; its reservation fails and it learns height 20.
    const refused = replyVote(await b.guard.handle(voteRequest(vote({ height: 19n }))));
    assert.equal(refused.error, 'error signing vote: height regression. Got 19, last height 20');
    const same = replyVote(await b.guard.handle(voteRequest(vote({ height: 20n, timestamp: ts(1) }))));
    assert.deepEqual(same.vote.timestamp, ts());
    const next = replyVote(await b.guard.handle(voteRequest(vote({ height: 21n }))));
    assert.equal(next.error, undefined);
    assert.equal(store.peek(CHAIN_ID)?.height, 21n);
  });

  it('a store that went backwards stops signing instead of becoming a new baseline', async () => {
    const fx = await makeGuard();
    replyVote(await fx.guard.handle(voteRequest(vote({ height: 50n }))));
    fx.store.setState(CHAIN_ID, { ...fx.store.peek(CHAIN_ID)!, height: 5n });
    const callsBefore = fx.signer.signed.length;
    assert.deepEqual(await fx.guard.handle(voteRequest(vote({ height: 51n }))), { kind: 'empty' });
    assert.match(fx.decisions.at(-1)?.reason ?? '', /went backwards/);
    assert.equal(fx.signer.signed.length, callsBefore);
    assert.equal(fx.guard.lastState()?.height, 50n);
    assert.equal(fx.store.peek(CHAIN_ID)?.height, 5n);
  });

  it('gives up with an empty Message when the state keeps changing', async () => {
    const inner = freshStore();
    let height = 0n;
    // Another writer that always gets there first, staying below the requested height.
    const racing = Object.assign(Object.create(inner) as InMemorySignStateStore, {
      async reserve(): Promise<ReserveResult> {
        height++;
        return {
          ok: false,
          current: { ...inner.peek(CHAIN_ID)!, height, step: 2, signBytes: new Uint8Array([1]) },
        };
      },
    });
    const fx = await makeGuard({ store: racing });
    assert.deepEqual(await fx.guard.handle(voteRequest(vote({ height: 100n }))), { kind: 'empty' });
    assert.equal(height, 3n);
    assert.equal(fx.signer.signed.length, 0);
    assert.match(fx.decisions.at(-1)?.reason ?? '', /3 reservation attempts/);
  });
});

describe('signer faults', () => {
  it('sign throws: empty Message; the reservation stays and a retry signs it', async () => {
    const fx = await makeGuard();
    fx.signer.injectFaults('throw');
    assert.deepEqual(await fx.guard.handle(voteRequest(vote())), { kind: 'empty' });
    assert.match(fx.decisions.at(-1)?.reason ?? '', /signer failed/);
    const bytes = voteSignBytes(CHAIN_ID, vote());
    assert.deepEqual(fx.store.peek(CHAIN_ID)?.signBytes, bytes);
    const { vote: v } = replyVote(await fx.guard.handle(voteRequest(vote({ timestamp: ts(40) }))));
    assert.deepEqual(v.timestamp, ts());
    assert.ok(verifySignature(fx.signer.pubKey, bytes, v.signature));
  });

  it('a bad signature from the signer is never returned', async () => {
    const fx = await makeGuard();
    fx.signer.injectFaults('bad-signature');
    assert.deepEqual(await fx.guard.handle(voteRequest(vote())), { kind: 'empty' });
    assert.match(fx.decisions.at(-1)?.reason ?? '', /failed verification/);
    assert.equal(fx.store.peek(CHAIN_ID)?.signature.length, 0, 'a bad signature is not recorded');
    const { vote: v } = replyVote(await fx.guard.handle(voteRequest(vote())));
    assert.ok(verifySignature(fx.signer.pubKey, voteSignBytes(CHAIN_ID, vote()), v.signature));
  });

  it('a failed extension signature: empty Message, then the retry returns both signatures', async () => {
    const fx = await makeGuard();
    const pc = vote({ type: 2, extension: new Uint8Array([7]) });
    fx.signer.injectFaults('none', 'throw');
    assert.deepEqual(await fx.guard.handle(voteRequest(pc)), { kind: 'empty' });
    const bytes = voteSignBytes(CHAIN_ID, pc);
    const extBytes = voteExtensionSignBytes(CHAIN_ID, pc);
    assert.deepEqual(fx.signer.signed, [bytes, extBytes]);
    assert.deepEqual(fx.store.peek(CHAIN_ID)?.extensionSignBytes, extBytes, 'reserved with the vote');
    const { vote: v } = replyVote(await fx.guard.handle(voteRequest(pc)));
    assert.ok(verifySignature(fx.signer.pubKey, bytes, v.signature));
    assert.ok(verifySignature(fx.signer.pubKey, extBytes, v.extensionSignature));
    assert.equal(fx.store.reserveCalls, 1);
  });
});

describe('concurrent sentries', () => {
  it('the same vote from five sentries at once: one reservation, one HSM call, one signature', async () => {
    const fx = await makeGuard();
    fx.store.setDelays({ reserve: 1, record: 1 });
    const replies = await Promise.all(Array.from({ length: 5 }, () => fx.guard.handle(voteRequest(vote()))));
    const signatures = replies.map((r) => replyVote(r).vote.signature);
    for (const sig of signatures) assert.deepEqual(sig, signatures[0]);
    assert.equal(fx.store.reserveCalls, 1);
    assert.equal(fx.signer.signed.length, 1);
    assert.deepEqual(
      fx.decisions.map((d) => d.outcome),
      ['signed', 'resigned', 'resigned', 'resigned', 'resigned'],
    );
  });

  it('two blocks at one HRS from two sentries at once: one signed, the other conflicting data', async () => {
    const fx = await makeGuard();
    fx.store.setDelays({ reserve: 1 });
    const [a, b] = await Promise.all([
      fx.guard.handle(voteRequest(vote({ blockId: blockId(1) }))),
      fx.guard.handle(voteRequest(vote({ blockId: blockId(2) }))),
    ]);
    assert.ok(a !== undefined && b !== undefined);
    assert.equal(replyVote(a).error, undefined);
    assert.equal(replyVote(b).error, 'error signing vote: conflicting data');
    assert.equal(fx.signer.signed.length, 1);
  });
});
