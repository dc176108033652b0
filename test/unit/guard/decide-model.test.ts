/**
 * decide() against a small reference model under fast-check.
 *
 * The model is the rule stated once more, independently and as plainly as possible: it keeps a
 * Map from HRS to the vote or proposal it signed there, and the highest HRS it signed. A request
 *   - above the highest HRS (and at most `maxHeightJump` heights above it) is signed as it is;
 *   - at the highest HRS is signed only if it is the signed request with at most another
 *     timestamp (and, for a vote, the same extension where one is signed); then what is signed is
 *     what was signed before;
 *   - anything else is refused.
 * Random request sequences (votes and proposals, same and other blocks, timestamp-only changes,
 * extensions, regressions, jumps) run through decide() with the state evolving as ChainGuard
 * evolves it, and through the model; both must agree on sign or refuse and on the exact bytes.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import fc from 'fast-check';
import { bytesEqual } from '../../../src/cometbft/bytes.ts';
import { proposalSignBytes, voteExtensionSignBytes, voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import type { Proposal, Vote } from '../../../src/cometbft/types.ts';
import { type ChainRules, decide, type SignRequest } from '../../../src/guard/decide.ts';
import { freshSignState, type SignState } from '../../../src/store/types.ts';
import { blockId, CHAIN_ID, hash32, proposal, ts, vote } from '../../helpers/guard-fixtures.ts';

const MAX_JUMP = 5;
const RULES: ChainRules = { chainId: CHAIN_ID, protocol: 'v0.38', maxHeightJump: MAX_JUMP };

interface Req {
  kind: 'prevote' | 'precommit' | 'proposal';
  /** relative to the highest height asked so far: a regression, the same, the next, a jump */
  heightDelta: number;
  round: number;
  block: number | null;
  tsMs: number;
  /** extension value on precommits for a block (0: none) */
  ext: number;
}

const reqArb: fc.Arbitrary<Req> = fc.record({
  kind: fc.constantFrom('prevote' as const, 'precommit' as const, 'proposal' as const),
  heightDelta: fc.oneof(
    { arbitrary: fc.constantFrom(0, 1), weight: 8 },
    { arbitrary: fc.integer({ min: -3, max: -1 }), weight: 1 },
    { arbitrary: fc.integer({ min: MAX_JUMP - 1, max: MAX_JUMP + 2 }), weight: 1 },
  ),
  round: fc.integer({ min: 0, max: 2 }),
  block: fc.constantFrom(null, 1, 2),
  tsMs: fc.constantFrom(0, 0, 1, 5000),
  ext: fc.integer({ min: 0, max: 2 }),
});

/** What the model signed at one HRS. */
type Signed = { kind: 'vote'; vote: Vote } | { kind: 'proposal'; proposal: Proposal };

/** The model's answer: refuse, or the exact sign bytes and extension sign bytes to sign. */
type Answer = { sign: false } | { sign: true; bytes: Uint8Array; ext: Uint8Array };

/** The reference model (see the file comment). Heights start at `start`, like `state init`. */
class Model {
  readonly signed = new Map<string, Signed>();
  top: [bigint, number, number];

  constructor(start: bigint) {
    this.top = [start, 0, 0];
  }

  answer(msg: Signed): Answer {
    const p = msg.kind === 'vote' ? msg.vote : msg.proposal;
    const step = msg.kind === 'proposal' ? 1 : msg.vote.type === 1 ? 2 : 3;
    const here: [bigint, number, number] = [p.height, p.round, step];
    const key = here.join('/');
    if (p.height < 1n || p.height > this.top[0] + BigInt(MAX_JUMP)) return { sign: false };
    const order = compare(here, this.top);
    if (order < 0) return { sign: false };
    if (order > 0) {
      this.signed.set(key, msg);
      this.top = here;
      return { sign: true, bytes: bytesOf(msg), ext: extOf(msg) };
    }
    const before = this.signed.get(key);
    if (before === undefined || before.kind !== msg.kind) return { sign: false };
    // The same request at most with another timestamp: rewrite the timestamp and compare.
    const restamped: Signed =
      msg.kind === 'vote'
        ? { kind: 'vote', vote: { ...msg.vote, timestamp: (before as typeof msg).vote.timestamp } }
        : {
            kind: 'proposal',
            proposal: { ...msg.proposal, timestamp: (before as typeof msg).proposal.timestamp },
          };
    if (!bytesEqual(bytesOf(restamped), bytesOf(before))) return { sign: false };
    const ext = extOf(msg);
    if (ext.length > 0 && !bytesEqual(ext, extOf(before))) return { sign: false };
    return { sign: true, bytes: bytesOf(before), ext: ext.length > 0 ? extOf(before) : new Uint8Array() };
  }
}

function compare(a: [bigint, number, number], b: [bigint, number, number]): number {
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
  if (a[1] !== b[1]) return a[1] - b[1];
  return a[2] - b[2];
}

function bytesOf(msg: Signed): Uint8Array {
  return msg.kind === 'vote' ? voteSignBytes(CHAIN_ID, msg.vote) : proposalSignBytes(CHAIN_ID, msg.proposal);
}

/** v0.38: an extension is signed exactly on a precommit for a block. */
function extOf(msg: Signed): Uint8Array {
  if (msg.kind !== 'vote' || msg.vote.type !== 2 || msg.vote.blockId.hash.length === 0)
    return new Uint8Array();
  return voteExtensionSignBytes(CHAIN_ID, msg.vote);
}

function toMessage(req: Req, height: bigint): Signed {
  const timestamp = ts(req.tsMs);
  if (req.kind === 'proposal') {
    return {
      kind: 'proposal',
      proposal: proposal({ height, round: req.round, blockId: blockId(req.block), timestamp }),
    };
  }
  // Extensions only where v0.38 allows them, so refusals come from the double-sign rule.
  const withExt = req.kind === 'precommit' && req.block !== null;
  return {
    kind: 'vote',
    vote: vote({
      type: req.kind === 'prevote' ? 1 : 2,
      height,
      round: req.round,
      blockId: blockId(req.block),
      timestamp,
      extension: withExt ? hash32(req.ext) : new Uint8Array(),
    }),
  };
}

function toRequest(msg: Signed): SignRequest {
  return msg.kind === 'vote'
    ? { kind: 'signVoteRequest', chainId: CHAIN_ID, vote: msg.vote, skipExtensionSigning: false }
    : { kind: 'signProposalRequest', chainId: CHAIN_ID, proposal: msg.proposal };
}

it('decide() with state evolution agrees with the reference model on what is signed', () => {
  fc.assert(
    fc.property(
      fc.bigInt({ min: 0n, max: 3n }),
      fc.array(reqArb, { minLength: 1, maxLength: 60 }),
      (start, reqs) => {
        const model = new Model(start);
        let last: SignState = freshSignState(start);
        let height = start;
        // every sign bytes value signed at each HRS, across the whole run
        const signedAt = new Map<string, string>();
        for (const req of reqs) {
          height = height + BigInt(req.heightDelta);
          if (height < 1n) height = 1n;
          const msg = toMessage(req, height);
          const want = model.answer(msg);
          const verdict = decide(last, toRequest(msg), RULES);
          const where = `${JSON.stringify(req)} at ${height}`;
          if (!want.sign) {
            assert.equal(verdict.action, 'refuse', `model refuses, decide() does not: ${where}`);
            continue;
          }
          assert.notEqual(verdict.action, 'refuse', `model signs, decide() refuses: ${where}`);
          if (verdict.action === 'refuse') continue;
          const bytes = verdict.action === 'reserve' ? verdict.next.signBytes : verdict.signBytes;
          const ext =
            verdict.action === 'reserve' ? verdict.next.extensionSignBytes : verdict.extensionSignBytes;
          assert.ok(bytesEqual(bytes, want.bytes), `other sign bytes than the model's: ${where}`);
          assert.ok(bytesEqual(ext, want.ext), `other extension sign bytes than the model's: ${where}`);
          if (verdict.action === 'reserve') last = verdict.next;
          // And the rule's whole point, checked on the model's own record too.
          const key = `${verdict.hrs.height}/${verdict.hrs.round}/${verdict.hrs.step}`;
          const hex = Buffer.from(bytes).toString('hex');
          assert.equal(signedAt.get(key) ?? hex, hex, `two different sign bytes at ${key}`);
          signedAt.set(key, hex);
        }
      },
    ),
    { numRuns: 300 },
  );
});
