/**
 * The deterministic simulator itself: a seed replays byte for byte, a quiet run violates nothing,
 * and a planted bug is caught (the full check of every planted bug is the CI tier,
 * scripts/sim-ci.sh).
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { PLANTED_BUGS, plantedBug } from '../../../sim/bugs.ts';
import { runSeed } from '../../../sim/world.ts';

const base = { nodes: 3, chains: 2, sentries: 2 };

it('one seed gives the same history twice (hash, steps, signatures)', async () => {
  const a = await runSeed({ ...base, seed: 7, steps: 4_000 });
  const b = await runSeed({ ...base, seed: 7, steps: 4_000 });
  assert.equal(a.steps, 4_000);
  assert.ok(a.signatures > 0, 'the run signed something');
  assert.deepEqual(
    [b.historyHash, b.steps, b.signatures, b.reservations, b.simMs],
    [a.historyHash, a.steps, a.signatures, a.reservations, a.simMs],
  );
  const other = await runSeed({ ...base, seed: 8, steps: 4_000 });
  assert.notEqual(other.historyHash, a.historyHash, 'another seed, another history');
});

it('a run of the product as it is violates no invariant', async () => {
  const r = await runSeed({ ...base, seed: 1, steps: 6_000 });
  assert.deepEqual(r.violations, []);
  assert.ok(r.reservations > 0 && r.signatures > 0);
});

it('signing before reserving is caught at once, and the violation names it', async () => {
  const bug = plantedBug('sign-before-reserve');
  assert.ok(bug !== undefined);
  const r = await runSeed({ ...base, seed: 1, steps: 6_000, ...bug.options });
  assert.ok(
    r.violations.some((v) => v.includes('never reserved')),
    r.violations.join('\n'),
  );
  assert.ok(r.tail.some((line) => line.includes('VIOLATION')));
});

it('--list-bugs names are the planted bugs, each with a budget', () => {
  const names = Object.keys(PLANTED_BUGS);
  assert.ok(names.length >= 4);
  for (const name of names) assert.ok((plantedBug(name)?.seedBudget ?? 0) > 0, name);
  assert.equal(plantedBug('toString'), undefined);
});
