/**
 * Transcript test of decide(): a fixed list of scenarios runs through the pure rule and every
 * request becomes one line "request -> verdict" in decide.transcript. The test fails on any
 * difference; `UPDATE_TRANSCRIPTS=1` rewrites the file instead, so that a change of behaviour
 * shows up as a diff of that file in review.
 *
 * Each scenario starts from a state and applies its requests in order; a `reserve` verdict moves
 * the state to the reservation (as ChainGuard does once the store confirmed it), everything else
 * leaves it as it is.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { it } from 'node:test';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import type { Proposal, ProtocolVersion, Vote } from '../../../src/cometbft/types.ts';
import { type ChainRules, decide, type SignRequest, type Verdict } from '../../../src/guard/decide.ts';
import { freshSignState, type SignState } from '../../../src/store/types.ts';
import { blockId, CHAIN_ID, hash32, proposal, ts, vote } from '../../helpers/guard-fixtures.ts';

const FILE = new URL('./decide.transcript', import.meta.url);

/** One request of a scenario, in the words the transcript prints. */
type Req =
  | {
      kind: 'prevote' | 'precommit';
      h: bigint;
      r: number;
      block: number | null;
      tsMs?: number;
      ext?: number;
      skipExt?: boolean;
      chainId?: string;
      address?: number;
    }
  | { kind: 'proposal'; h: bigint; r: number; block: number | null; tsMs?: number; pol?: number };

interface Scenario {
  /** what it shows (printed as a comment line) */
  title: string;
  protocol?: ProtocolVersion;
  maxHeightJump?: number;
  start?: SignState;
  requests: Req[];
}

const pv = (h: bigint, r: number, block: number | null, more: Partial<Req> = {}): Req =>
  ({ kind: 'prevote', h, r, block, ...more }) as Req;
const pc = (h: bigint, r: number, block: number | null, more: Partial<Req> = {}): Req =>
  ({ kind: 'precommit', h, r, block, ...more }) as Req;
const prop = (h: bigint, r: number, block: number | null, more: Partial<Req> = {}): Req =>
  ({ kind: 'proposal', h, r, block, ...more }) as Req;

/** A state reserved by a prevote at 5/0 for block 1 (no signature recorded yet). */
const reservedAt5: SignState = {
  height: 5n,
  round: 0,
  step: 2,
  signBytes: voteSignBytes(CHAIN_ID, vote({ height: 5n, round: 0, blockId: blockId(1) })),
  extensionSignBytes: new Uint8Array(),
  signature: new Uint8Array(),
};

const SCENARIOS: Scenario[] = [
  {
    // The normal life of a height: proposal, prevote, precommit, each reserved once.
    title: 'one height, proposal then prevote then precommit (v0.38, extension on the precommit)',
    requests: [prop(1n, 0, 1), pv(1n, 0, 1), pc(1n, 0, 1, { ext: 1 }), pv(2n, 0, 2)],
  },
  {
    // A retry of the same request gets the same bytes signed again.
    title: 'identical retries at the last HRS are re-signed, never reserved twice',
    requests: [pv(1n, 0, 1), pv(1n, 0, 1), pc(1n, 0, 1, { ext: 1 }), pc(1n, 0, 1, { ext: 1 })],
  },
  {
    // Only the timestamp differs: the reserved bytes and timestamp are what gets signed.
    title: 'timestamp-only differences sign the reserved bytes and return the reserved timestamp',
    requests: [pv(1n, 0, 1), pv(1n, 0, 1, { tsMs: 1500 }), prop(2n, 0, 3), prop(2n, 0, 3, { tsMs: 7 })],
  },
  {
    // Equivocation attempts at the reserved HRS.
    title: 'another block, nil instead of a block, another extension: refused as conflicting',
    requests: [
      pc(1n, 0, 1, { ext: 1 }),
      pc(1n, 0, 2, { ext: 1 }),
      pc(1n, 0, null),
      pc(1n, 0, 1, { ext: 2 }),
      pc(1n, 0, 1, { ext: 2, tsMs: 9 }),
      prop(1n, 1, 1),
      prop(1n, 1, 2),
    ],
  },
  {
    // FilePV order: height, then round, then step.
    title: 'regressions of height, round and step, with FilePV texts',
    requests: [pc(3n, 2, 1), pv(3n, 2, 1), prop(3n, 2, 1), pc(3n, 1, 1), pv(2n, 5, 1), pc(3n, 3, null)],
  },
  {
    title: 'a state imported or initialised without sign bytes',
    start: { ...freshSignState(7n), round: 1, step: 2 },
    requests: [pv(7n, 1, 1), pv(7n, 0, 1), pc(7n, 1, 1)],
  },
  {
    title: 'the same HRS as a bare state (no sign bytes to compare with) is refused',
    start: { ...freshSignState(7n), round: 1, step: 2 },
    requests: [pv(7n, 1, 1)],
  },
  {
    title: 'a state left by a crash between reserve and sign: only its bytes can be signed',
    start: reservedAt5,
    requests: [pv(5n, 0, 2), pv(5n, 0, 1, { tsMs: 60_000 }), pv(5n, 0, 1), pc(5n, 0, 1, { ext: 3 })],
  },
  {
    // max_height_jump = 10 here: at most 10 above the last reserved height.
    title: 'height jumps beyond max_height_jump, and out-of-range values',
    maxHeightJump: 10,
    requests: [pv(11n, 0, 1), pv(10n, 0, 1), pv(20n, 0, 1), pv(0n, 0, 1), pv(21n, -1, 1), prop(21n, 2, 1)],
  },
  {
    title: 'proposal POL rounds: -1 or below the round',
    requests: [prop(1n, 1, 1, { pol: 1 }), prop(1n, 1, 1, { pol: -2 }), prop(1n, 2, 1, { pol: 0 })],
  },
  {
    title: 'vote extensions on v0.38: forbidden on prevotes and nil precommits',
    requests: [pv(1n, 0, 1, { ext: 1 }), pc(1n, 0, null, { ext: 1 }), pc(1n, 0, null), pc(2n, 0, 1)],
  },
  {
    title: 'v1.0 skip_extension_signing: extension ignored, nothing extra signed',
    protocol: 'v1.0',
    requests: [pc(1n, 0, 1, { ext: 1, skipExt: true }), pc(1n, 0, 1, { ext: 1 })],
  },
  {
    title: 'v0.34 has no extensions: a stray one is ignored',
    protocol: 'v0.34',
    requests: [pc(1n, 0, 1, { ext: 1 }), pc(1n, 0, 1, { ext: 2 })],
  },
  {
    title: 'another chain, another validator address',
    requests: [pv(1n, 0, 1, { chainId: 'other-chain' }), pv(1n, 0, 1, { address: 9 }), pv(1n, 0, 1)],
  },
];

/** A fixed validator address for the address check (any 20 bytes do). */
const ADDRESS = new Uint8Array(20).fill(0xab);

function toRequest(req: Req): SignRequest {
  const timestamp = ts(req.tsMs ?? 0);
  if (req.kind === 'proposal') {
    const p: Proposal = proposal({
      height: req.h,
      round: req.r,
      polRound: req.pol ?? -1,
      blockId: blockId(req.block),
      timestamp,
    });
    return { kind: 'signProposalRequest', chainId: CHAIN_ID, proposal: p };
  }
  const v: Vote = vote({
    type: req.kind === 'prevote' ? 1 : 2,
    height: req.h,
    round: req.r,
    blockId: blockId(req.block),
    timestamp,
    validatorAddress: req.address === undefined ? ADDRESS : new Uint8Array(20).fill(req.address),
    extension: req.ext === undefined ? new Uint8Array() : hash32(req.ext),
  });
  return {
    kind: 'signVoteRequest',
    chainId: req.chainId ?? CHAIN_ID,
    vote: v,
    skipExtensionSigning: req.skipExt ?? false,
  };
}

/** The first 8 hex digits of the SHA-256 of `bytes`, or "-" for none. */
function short(bytes: Uint8Array): string {
  return bytes.length === 0 ? '-' : bytesToHex(sha256(bytes)).slice(0, 8);
}

const hrs = (s: { height: bigint; round: number; step: number }): string =>
  `${s.height}/${s.round}/${s.step}`;

function describeRequest(req: Req): string {
  const parts = [`${req.kind} ${req.h}/${req.r}`, `block=${req.block ?? 'nil'}`];
  if (req.tsMs !== undefined) parts.push(`ts=+${req.tsMs}ms`);
  if (req.kind === 'proposal') {
    if (req.pol !== undefined) parts.push(`pol=${req.pol}`);
  } else {
    if (req.ext !== undefined) parts.push(`ext=${req.ext}`);
    if (req.skipExt) parts.push('skip_ext');
    if (req.chainId !== undefined) parts.push(`chain=${req.chainId}`);
    if (req.address !== undefined) parts.push(`address=${req.address}`);
  }
  return parts.join(' ');
}

function describeVerdict(v: Verdict): string {
  switch (v.action) {
    case 'refuse':
      return `refuse ${v.code}: ${v.text}`;
    case 'reserve':
      return `reserve ${hrs(v.hrs)} sign=${short(v.next.signBytes)} ext=${short(v.next.extensionSignBytes)}`;
    case 'sign_reserved': {
      const stamp = v.timestamp === undefined ? '' : ` reply_ts=${v.timestamp.seconds}.${v.timestamp.nanos}`;
      return `${v.outcome} ${hrs(v.hrs)} sign=${short(v.signBytes)} ext=${short(v.extensionSignBytes)}${stamp}`;
    }
  }
}

/** Runs every scenario through decide() and returns the transcript text. */
function transcript(): string {
  const lines = [
    '# decide() transcript: request -> verdict, one scenario per block (test/unit/guard/decide-transcript.test.ts).',
    '# sign= and ext= are the first 8 hex digits of SHA-256 of the bytes the verdict names; "-" is none.',
    '# Rewrite on purpose with UPDATE_TRANSCRIPTS=1; review the diff.',
  ];
  for (const s of SCENARIOS) {
    const rules: ChainRules = {
      chainId: CHAIN_ID,
      protocol: s.protocol ?? 'v0.38',
      maxHeightJump: s.maxHeightJump ?? 100,
      validatorAddress: ADDRESS,
    };
    let last = s.start ?? freshSignState(0n);
    lines.push('', `## ${s.title}`, `start ${hrs(last)} sign=${short(last.signBytes)} (${rules.protocol})`);
    for (const req of s.requests) {
      const verdict = decide(last, toRequest(req), rules);
      lines.push(`${describeRequest(req)} -> ${describeVerdict(verdict)}`);
      if (verdict.action === 'reserve') last = verdict.next;
    }
  }
  return `${lines.join('\n')}\n`;
}

it('decide() matches its transcript (UPDATE_TRANSCRIPTS=1 rewrites it)', () => {
  const actual = transcript();
  if (process.env['UPDATE_TRANSCRIPTS'] === '1') {
    writeFileSync(FILE, actual);
    return;
  }
  let expected: string;
  try {
    expected = readFileSync(FILE, 'utf8');
  } catch {
    assert.fail(`${FILE.pathname} is missing: run with UPDATE_TRANSCRIPTS=1 to create it`);
  }
  assert.equal(
    actual,
    expected,
    'decide() changed behaviour: review, then rewrite with UPDATE_TRANSCRIPTS=1',
  );
});
