import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkHRS, compareHRS, voteStep } from '../../../src/guard/hrs.ts';
import { initialSignState, type SignState } from '../../../src/store/types.ts';

const last: SignState = {
  ...initialSignState(),
  height: 10n,
  round: 2,
  step: 2,
  signBytes: new Uint8Array([1]),
};

describe('FilePV CheckHRS', () => {
  const cases: [string, { height: bigint; round: number; step: number }, ReturnType<typeof checkHRS>][] = [
    [
      'lower height',
      { height: 9n, round: 5, step: 3 },
      { kind: 'refused', reason: 'height regression. Got 9, last height 10' },
    ],
    [
      'lower round',
      { height: 10n, round: 1, step: 3 },
      { kind: 'refused', reason: 'round regression at height 10. Got 1, last round 2' },
    ],
    [
      'lower step',
      { height: 10n, round: 2, step: 1 },
      { kind: 'refused', reason: 'step regression at height 10 round 2. Got 1, last step 2' },
    ],
    ['same HRS', { height: 10n, round: 2, step: 2 }, { kind: 'same' }],
    ['higher step', { height: 10n, round: 2, step: 3 }, { kind: 'higher' }],
    ['lower step, higher round', { height: 10n, round: 3, step: 1 }, { kind: 'higher' }],
    ['lower round, higher height', { height: 11n, round: 0, step: 1 }, { kind: 'higher' }],
  ];
  for (const [name, req, want] of cases) it(name, () => assert.deepEqual(checkHRS(last, req), want));

  it('same HRS without sign bytes is an error', () => {
    const bare = { ...last, signBytes: new Uint8Array() };
    assert.deepEqual(checkHRS(bare, last), { kind: 'refused', reason: 'no SignBytes found' });
  });

  it('anything is higher than the initial state', () => {
    assert.deepEqual(checkHRS(initialSignState(), { height: 1n, round: 0, step: 1 }), { kind: 'higher' });
  });
});

describe('HRS helpers', () => {
  it('maps vote types to steps and rejects the rest', () => {
    assert.equal(voteStep(1), 2);
    assert.equal(voteStep(2), 3);
    for (const t of [0, 3, 32, -1]) assert.equal(voteStep(t), undefined);
  });

  it('orders HRS lexicographically', () => {
    const a = { height: 5n, round: 1, step: 3 };
    assert.equal(compareHRS(a, a), 0);
    assert.ok(compareHRS(a, { height: 6n, round: 0, step: 1 }) < 0);
    assert.ok(compareHRS(a, { height: 5n, round: 2, step: 1 }) < 0);
    assert.ok(compareHRS(a, { height: 5n, round: 1, step: 2 }) > 0);
    assert.ok(
      compareHRS({ height: 2n ** 62n, round: 0, step: 1 }, { height: 2n ** 62n - 1n, round: 9, step: 3 }) > 0,
    );
  });
});
