/** The chaos schedule: a seed replays it, the first pass covers every kind, overlaps are sound. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { faultKinds } from '../../chaos/harness/faults/index.ts';
import { Schedule } from '../../chaos/harness/schedule.ts';

const names = (s: Schedule, rounds: number): string[] =>
  Array.from({ length: rounds }, () =>
    s
      .next()
      .map((k) => k.name)
      .join('+'),
  );

describe('chaos schedule', () => {
  for (const mode of ['single', 'cluster'] as const) {
    const kinds = faultKinds(mode);

    it(`${mode}: the same seed gives the same schedule, another seed another`, () => {
      assert.deepEqual(names(new Schedule(42, kinds), 300), names(new Schedule(42, kinds), 300));
      assert.notDeepEqual(names(new Schedule(42, kinds), 300), names(new Schedule(43, kinds), 300));
    });

    it(`${mode}: the first rounds cover every kind once`, () => {
      const s = new Schedule(7, kinds);
      const first = Array.from({ length: kinds.length }, () => s.next());
      assert.ok(first.every((r) => r.length === 1));
      assert.deepEqual(first.map((r) => r[0]!.name).sort(), kinds.map((k) => k.name).sort());
    });

    it(`${mode}: overlapping faults are of different layers and never exclusive`, () => {
      const s = new Schedule(9, kinds);
      let overlaps = 0;
      for (let i = 0; i < 2_000; i++) {
        const r = s.next();
        if (r.length < 2) continue;
        overlaps++;
        assert.notEqual(r[0]!.layer, r[1]!.layer);
        assert.ok(!r[0]!.exclusive && !r[1]!.exclusive, r.map((k) => k.name).join('+'));
      }
      assert.ok(overlaps > 100, `overlaps happen (${overlaps})`);
    });
  }

  it('refuses an unknown kind and an empty schedule', () => {
    assert.throws(() => faultKinds('cluster', ['no-such-fault']), /unknown fault kind no-such-fault/);
    assert.throws(() => new Schedule(1, []), /at least one fault kind/);
  });
});
