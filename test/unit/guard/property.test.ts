import assert from 'node:assert/strict';
import { it } from 'node:test';
import { bytesToHex } from '@noble/hashes/utils.js';
import fc from 'fast-check';
import { proposalSignBytes, voteExtensionSignBytes, voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import { compareHRS, type PrivvalMessage, type ProtocolVersion } from '../../../src/cometbft/types.ts';
import { verifySignature } from '../../../src/cometbft/verify.ts';
import { ChainGuard } from '../../../src/guard/chain-guard.ts';
import type { Signer } from '../../../src/guard/signer.ts';
import type { SignState } from '../../../src/store/types.ts';
import { blockId, CHAIN_ID, freshStore, proposal, SEED, ts, vote } from '../../helpers/guard-fixtures.ts';
import { InMemorySigner } from '../../helpers/memory-signer.ts';
import type { InMemorySignStateStore, ReserveFault } from '../../helpers/memory-store.ts';

type Fault = ReserveFault | 'record' | 'signer-throw' | 'bad-signature';

interface Step {
  /** which of the two guards (two KMS nodes sharing one store) receives it */
  guard: 0 | 1;
  kind: 'prevote' | 'precommit' | 'proposal';
  /** added to the batch index: the chain mostly moves on, sometimes steps back */
  heightDelta: number;
  round: number;
  /** null: a nil vote or proposal */
  block: number | null;
  tsOffset: number;
  extension: number;
  skipExtensionSigning: boolean;
  fault: Fault | null;
}

const stepArb: fc.Arbitrary<Step> = fc.record({
  guard: fc.constantFrom(0 as const, 1 as const),
  kind: fc.constantFrom('prevote' as const, 'precommit' as const, 'proposal' as const),
  heightDelta: fc.integer({ min: -1, max: 1 }),
  round: fc.integer({ min: 0, max: 2 }),
  block: fc.constantFrom(null, 1, 2),
  tsOffset: fc.constantFrom(0, 1000, 2000),
  extension: fc.integer({ min: 0, max: 2 }),
  skipExtensionSigning: fc.boolean(),
  // One request in ten comes with a store or signer fault.
  fault: fc.oneof(
    { arbitrary: fc.constant(null), weight: 9 },
    {
      arbitrary: fc.constantFrom<Fault>(
        'throw',
        'apply-then-throw',
        'apply-then-conflict',
        'record',
        'signer-throw',
        'bad-signature',
      ),
      weight: 1,
    },
  ),
});

/** Requests grouped into batches; a batch is handled concurrently (several sentries at once). */
const scenarioArb = fc.record({
  protocol: fc.constantFrom<ProtocolVersion>('v0.38', 'v1.0', 'v0.34'),
  slowStore: fc.boolean(),
  batches: fc.array(fc.array(stepArb, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 10 }),
});

function toRequest(s: Step, batchIndex: number): PrivvalMessage {
  const over = {
    height: BigInt(Math.max(1, batchIndex + s.heightDelta)),
    round: s.round,
    blockId: blockId(s.block),
    timestamp: ts(s.tsOffset),
  };
  if (s.kind === 'proposal') {
    return { kind: 'signProposalRequest', chainId: CHAIN_ID, proposal: proposal(over) };
  }
  const ext = s.extension === 0 ? new Uint8Array() : new Uint8Array([s.extension]);
  return {
    kind: 'signVoteRequest',
    chainId: CHAIN_ID,
    skipExtensionSigning: s.skipExtensionSigning,
    vote: vote({
      ...over,
      type: s.kind === 'prevote' ? 1 : 2,
      extension: s.kind === 'precommit' ? ext : ext.slice(0, 0),
    }),
  };
}

const KEY = InMemorySigner.ed25519(SEED).pubKey;

const hrsKey = (s: { height: bigint; round: number; step: number }) => `${s.height}/${s.round}/${s.step}`;

/**
 * Wraps the signer so that every call is checked at the moment it happens: the message must be
 * sign bytes or extension sign bytes the store has reserved by then (invariant 2).
 */
function checkingSigner(inner: InMemorySigner, store: InMemorySignStateStore, violations: string[]): Signer {
  return {
    pubKey: inner.pubKey,
    async sign(message: Uint8Array): Promise<Uint8Array> {
      const hex = bytesToHex(message);
      const reserved = store
        .history(CHAIN_ID)
        .some((s) => bytesToHex(s.signBytes) === hex || bytesToHex(s.extensionSignBytes) === hex);
      if (!reserved) violations.push(`signer called with unreserved bytes ${hex}`);
      return inner.sign(message);
    },
  };
}

function checkHistory(history: SignState[]): void {
  for (let i = 1; i < history.length; i++) {
    const prev = history[i - 1]!;
    const next = history[i]!;
    const order = compareHRS(next, prev);
    assert.ok(
      order > 0 || (order === 0 && bytesToHex(next.signBytes) === bytesToHex(prev.signBytes)),
      `store moved from ${hrsKey(prev)} to ${hrsKey(next)} (or changed bytes in place)`,
    );
  }
}

it('never signs two different sign bytes at one HRS, whatever the interleaving and faults', async () => {
  let signedTotal = 0;
  await fc.assert(
    fc.asyncProperty(scenarioArb, async (scenario) => {
      const store = freshStore();
      if (scenario.slowStore) store.setDelays({ reserve: 0, record: 0 });
      const inner = InMemorySigner.ed25519(SEED);
      const violations: string[] = [];
      const signer = checkingSigner(inner, store, violations);
      const guards = [0, 1].map(
        () =>
          new ChainGuard({
            chainId: CHAIN_ID,
            protocol: scenario.protocol,
            signer,
            store,
            maxHeightJump: 100_000,
          }),
      );
      for (const g of guards) await g.init();

      const signedAt = new Map<string, Set<string>>();
      const extensionsSignedAt = new Map<string, Set<string>>();
      for (const [batchIndex, batch] of scenario.batches.entries()) {
        const requests = batch.map((s) => toRequest(s, batchIndex));
        for (const s of batch) {
          if (s.fault === 'record') store.failNextRecord();
          else if (s.fault === 'bad-signature') inner.injectFaults('bad-signature');
          else if (s.fault === 'signer-throw') inner.injectFaults('throw');
          else if (s.fault !== null) store.injectReserveFault(s.fault);
        }
        const replies = await Promise.all(batch.map((s, i) => guards[s.guard]!.handle(requests[i]!)));

        replies.forEach((reply, i) => {
          const request = requests[i]!;
          if (reply.kind === 'empty') return;
          if (reply.kind === 'signedVoteResponse' && request.kind === 'signVoteRequest' && request.vote) {
            assert.ok(
              (reply.error === undefined) !== (reply.vote.signature.length === 0),
              'signature xor error',
            );
            if (reply.error !== undefined) return;
            const bytes = voteSignBytes(CHAIN_ID, reply.vote);
            assert.ok(verify(bytes, reply.vote.signature), 'vote signature over the replied vote');
            const hrs = { height: reply.vote.height, round: reply.vote.round, step: reply.vote.type + 1 };
            add(signedAt, hrsKey(hrs), bytesToHex(bytes));
            signedTotal++;
            const nonNilPrecommit = request.vote.type === 2 && request.vote.blockId.hash.length > 0;
            const extOn =
              scenario.protocol === 'v0.38' ||
              (scenario.protocol === 'v1.0' && !request.skipExtensionSigning);
            if (nonNilPrecommit && extOn) {
              const extBytes = voteExtensionSignBytes(CHAIN_ID, request.vote);
              assert.ok(verify(extBytes, reply.vote.extensionSignature), 'extension signature');
              add(extensionsSignedAt, hrsKey(hrs), bytesToHex(extBytes));
            } else {
              assert.equal(reply.vote.extensionSignature.length, 0, 'no extension signature');
            }
            return;
          }
          if (reply.kind === 'signedProposalResponse' && request.kind === 'signProposalRequest') {
            assert.ok(
              (reply.error === undefined) !== (reply.proposal.signature.length === 0),
              'signature xor error',
            );
            if (reply.error !== undefined) return;
            const bytes = proposalSignBytes(CHAIN_ID, reply.proposal);
            assert.ok(
              verify(bytes, reply.proposal.signature),
              'proposal signature over the replied proposal',
            );
            add(signedAt, hrsKey({ ...reply.proposal, step: 1 }), bytesToHex(bytes));
            signedTotal++;
            return;
          }
          assert.fail(`unexpected reply ${reply.kind} to ${request.kind}`);
        });
      }

      assert.deepEqual(violations, []);
      const history = store.history(CHAIN_ID);
      checkHistory(history);
      const reservedAt = new Map(history.map((s) => [hrsKey(s), bytesToHex(s.signBytes)]));
      for (const [hrs, set] of signedAt) {
        assert.equal(set.size, 1, `two different sign bytes signed at ${hrs}`);
        assert.equal(reservedAt.get(hrs), [...set][0], `signed bytes at ${hrs} are the reserved ones`);
      }
      const reservedExtensionAt = new Map(history.map((s) => [hrsKey(s), bytesToHex(s.extensionSignBytes)]));
      for (const [hrs, set] of extensionsSignedAt) {
        assert.equal(set.size, 1, `two different extensions signed at ${hrs}`);
        assert.equal(reservedExtensionAt.get(hrs), [...set][0], `extension at ${hrs} is the reserved one`);
      }
    }),
    { seed: 20240601, numRuns: 300 },
  );
  // The property is only meaningful if plenty of requests were actually signed.
  assert.ok(signedTotal > 1000, `only ${signedTotal} replies carried a signature across all runs`);
});

function verify(message: Uint8Array, signature: Uint8Array): boolean {
  return verifySignature(KEY, message, signature);
}

function add(map: Map<string, Set<string>>, key: string, value: string): void {
  const set = map.get(key) ?? new Set<string>();
  set.add(value);
  map.set(key, set);
}
