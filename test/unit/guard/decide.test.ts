import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { voteExtensionSignBytes, voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import { compareHRS, type PrivvalMessage } from '../../../src/cometbft/types.ts';
import {
  type ChainRules,
  checkAdvance,
  decide,
  isDoubleSignRefusal,
  MAX_HEIGHT,
  type SignRequest,
  type Verdict,
  voteStep,
} from '../../../src/guard/decide.ts';
import { freshSignState, type SignState } from '../../../src/store/types.ts';
import {
  blockId,
  CHAIN_ID,
  proposal,
  proposalRequest,
  ts,
  vote,
  voteRequest,
} from '../../helpers/guard-fixtures.ts';

const RULES: ChainRules = { chainId: CHAIN_ID, protocol: 'v0.38', maxHeightJump: 100 };
const sign = (r: PrivvalMessage) => r as SignRequest;
const precommit = (over: Parameters<typeof vote>[0] = {}) => vote({ type: 2, ...over });

/** The state after a prevote at `height`/0 for block 1 was reserved. */
function reservedPrevote(height = 10n): SignState {
  return {
    height,
    round: 0,
    step: 2,
    signBytes: voteSignBytes(CHAIN_ID, vote({ height })),
    extensionSignBytes: new Uint8Array(),
    signature: new Uint8Array(),
  };
}

function refusal(v: Verdict): { code: string; text: string } {
  assert.equal(v.action, 'refuse', `expected a refusal, got ${v.action}`);
  return v.action === 'refuse' ? { code: v.code, text: v.text } : { code: '', text: '' };
}

describe('decide: FilePV CheckHRS with its exact texts', () => {
  const last: SignState = { ...reservedPrevote(10n), round: 2 };
  const cases: Array<[string, PrivvalMessage, string, string]> = [
    [
      'lower height',
      voteRequest(precommit({ height: 9n, round: 5 })),
      'height_regression',
      'error signing vote: height regression. Got 9, last height 10',
    ],
    [
      'lower round',
      voteRequest(precommit({ round: 1 })),
      'round_regression',
      'error signing vote: round regression at height 10. Got 1, last round 2',
    ],
    [
      'lower step',
      proposalRequest(proposal({ round: 2, polRound: -1 })),
      'step_regression',
      'error signing proposal: step regression at height 10 round 2. Got 1, last step 2',
    ],
  ];
  for (const [name, request, code, text] of cases) {
    it(name, () => {
      assert.deepEqual(refusal(decide(last, sign(request), RULES)), { code, text });
      assert.ok(isDoubleSignRefusal(code));
    });
  }

  it('a higher step, a lower step in a higher round, a lower round at a higher height: reserve', () => {
    for (const request of [
      voteRequest(precommit({ round: 2 })),
      proposalRequest(proposal({ round: 3, polRound: -1 })),
      voteRequest(vote({ height: 11n, round: 0 })),
    ]) {
      const v = decide(last, sign(request), RULES);
      assert.equal(v.action, 'reserve');
      if (v.action === 'reserve') assert.ok(compareHRS(v.next, last) > 0);
    }
  });

  it('the same HRS as a state without sign bytes is refused (no SignBytes found)', () => {
    const bare = { ...freshSignState(10n), round: 0, step: 2 };
    assert.deepEqual(refusal(decide(bare, sign(voteRequest(vote())), RULES)), {
      code: 'no_sign_bytes',
      text: 'error signing vote: no SignBytes found',
    });
  });
});

describe('decide: the same HRS signs only what is reserved there', () => {
  const last = reservedPrevote();

  it('identical bytes: re-sign the reserved bytes (or return the recorded signature)', () => {
    const v = decide({ ...last, signature: new Uint8Array([9]) }, sign(voteRequest(vote())), RULES);
    assert.equal(v.action, 'sign_reserved');
    if (v.action !== 'sign_reserved') return;
    assert.equal(v.outcome, 'resigned');
    assert.deepEqual(v.signBytes, last.signBytes);
    assert.deepEqual(v.recorded, new Uint8Array([9]));
    assert.equal(v.timestamp, undefined);
  });

  it('only the timestamp differs: the reserved bytes and the reserved timestamp', () => {
    const v = decide(last, sign(voteRequest(vote({ timestamp: ts(5000) }))), RULES);
    assert.equal(v.action, 'sign_reserved');
    if (v.action !== 'sign_reserved') return;
    assert.equal(v.outcome, 'timestamp_only');
    assert.deepEqual(v.signBytes, last.signBytes);
    assert.deepEqual(v.timestamp, ts());
  });

  it('another block is conflicting data', () => {
    assert.deepEqual(refusal(decide(last, sign(voteRequest(vote({ blockId: blockId(7) }))), RULES)), {
      code: 'conflicting_data',
      text: 'error signing vote: conflicting data',
    });
  });

  it('another vote extension than the reserved one is refused, and counts as a double-sign attempt', () => {
    const reserved: SignState = {
      height: 10n,
      round: 0,
      step: 3,
      signBytes: voteSignBytes(CHAIN_ID, precommit()),
      extensionSignBytes: voteExtensionSignBytes(CHAIN_ID, precommit({ extension: new Uint8Array([1]) })),
      signature: new Uint8Array(),
    };
    const other = decide(reserved, sign(voteRequest(precommit({ extension: new Uint8Array([2]) }))), RULES);
    assert.deepEqual(refusal(other), {
      code: 'conflicting_extension',
      text: 'error signing vote: conflicting vote extension',
    });
    assert.ok(isDoubleSignRefusal('conflicting_extension'));
    const same = decide(reserved, sign(voteRequest(precommit({ extension: new Uint8Array([1]) }))), RULES);
    assert.equal(same.action, 'sign_reserved');
    if (same.action === 'sign_reserved')
      assert.deepEqual(same.extensionSignBytes, reserved.extensionSignBytes);
  });
});

describe('decide: out-of-range requests are never reserved', () => {
  const fresh = freshSignState();

  it('heights above 2^62 are refused outright, whatever the jump limit', () => {
    const rules = { ...RULES, maxHeightJump: Number.MAX_SAFE_INTEGER };
    const top = (1n << 63n) - 1n;
    for (const height of [MAX_HEIGHT + 1n, top]) {
      const v = decide({ ...fresh, height: MAX_HEIGHT }, sign(voteRequest(vote({ height }))), rules);
      assert.equal(refusal(v).code, 'height_out_of_range');
    }
    const at = decide(
      { ...fresh, height: MAX_HEIGHT - 5n },
      sign(voteRequest(vote({ height: MAX_HEIGHT }))),
      rules,
    );
    assert.equal(at.action, 'reserve');
  });

  it('max_height_jump counts from the last reserved height, including a fresh state at height 0', () => {
    assert.equal(
      refusal(decide(fresh, sign(voteRequest(vote({ height: 101n }))), RULES)).code,
      'height_jump',
    );
    assert.equal(decide(fresh, sign(voteRequest(vote({ height: 100n }))), RULES).action, 'reserve');
    // `state init --height 5000000`: a validator joining a running chain signs from there
    const joined = freshSignState(5_000_000n);
    assert.equal(decide(joined, sign(voteRequest(vote({ height: 5_000_050n }))), RULES).action, 'reserve');
    assert.equal(
      refusal(decide(joined, sign(voteRequest(vote({ height: 5_000_101n }))), RULES)).text,
      'error signing vote: height jump too large. Got 5000101, last height 5000000, max jump 100',
    );
  });

  it('proposals with pol_round >= round (other than -1) or < -1 are refused', () => {
    for (const [round, polRound] of [
      [0, 0],
      [2, 2],
      [2, 3],
      [1, -2],
    ] as const) {
      const v = decide(fresh, sign(proposalRequest(proposal({ height: 1n, round, polRound }))), RULES);
      assert.deepEqual(refusal(v), {
        code: 'invalid_pol_round',
        text: `error signing proposal: invalid pol_round ${polRound} for round ${round}`,
      });
    }
    for (const [round, polRound] of [
      [0, -1],
      [3, 2],
      [3, 0],
    ] as const) {
      const v = decide(fresh, sign(proposalRequest(proposal({ height: 1n, round, polRound }))), RULES);
      assert.equal(v.action, 'reserve');
    }
  });

  it('height 0, negative heights and rounds, and types that are not votes are refused', () => {
    const code = (r: PrivvalMessage) => refusal(decide(fresh, sign(r), RULES)).code;
    assert.equal(code(voteRequest(vote({ height: 0n }))), 'invalid_height');
    assert.equal(code(voteRequest(vote({ height: -3n }))), 'invalid_height');
    assert.equal(code(voteRequest(vote({ height: 1n, round: -1 }))), 'invalid_round');
    assert.equal(code(voteRequest(vote({ type: 32 }))), 'invalid_vote_type');
  });

  it('a 1 MB chain id is cut to a bounded length in the refusal', () => {
    const huge = 'x'.repeat(1024 * 1024);
    const { code, text } = refusal(decide(fresh, sign(voteRequest(vote(), huge)), RULES));
    assert.equal(code, 'chain_id_mismatch');
    assert.ok(text.length < 400, `refusal is ${text.length} characters`);
    assert.match(text, /got x{256}…\[cut: 1048576 bytes\], want test-chain$/);
  });
});

describe('checkAdvance: the store only moves forward', () => {
  const known = reservedPrevote();
  it('accepts a higher state and the same reservation (a signature may have been recorded)', () => {
    assert.deepEqual(checkAdvance(known, { ...known, step: 3 }), { ok: true });
    assert.deepEqual(checkAdvance(known, { ...known, signature: new Uint8Array([1]) }), { ok: true });
  });
  it('accepts the same HRS without sign bytes (an imported last state): it allows only what is above', () => {
    const imported = freshSignState(known.height);
    Object.assign(imported, { round: known.round, step: known.step });
    assert.deepEqual(checkAdvance(known, imported), { ok: true });
    assert.equal(refusal(decide(imported, sign(voteRequest(vote())), RULES)).code, 'no_sign_bytes');
  });
  it('refuses a lower state, and other bytes at the same HRS', () => {
    assert.equal(checkAdvance(known, { ...known, height: 9n }).ok, false);
    const other = voteSignBytes(CHAIN_ID, vote({ blockId: blockId(3) }));
    assert.equal(checkAdvance(known, { ...known, signBytes: other }).ok, false);
  });
});

describe('voteStep', () => {
  it('maps vote types to steps and rejects the rest', () => {
    assert.equal(voteStep(1), 2);
    assert.equal(voteStep(2), 3);
    for (const t of [0, 3, 32, -1]) assert.equal(voteStep(t), undefined);
  });
});
