import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { HEAP_GROWING_PERCENT, limitHeapGrowth } from '../../../src/cli/runtime/heap-growth.ts';

const MODULE = fileURLToPath(new URL('../../../src/cli/runtime/heap-growth.ts', import.meta.url));

test('sets the growing step unless node was given its own', () => {
  assert.equal(limitHeapGrowth([]), `--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  assert.equal(
    limitHeapGrowth(['--max-semi-space-size=4']),
    `--heap-growing-percent=${HEAP_GROWING_PERCENT}`,
  );
  assert.equal(limitHeapGrowth(['--heap-growing-percent=50']), undefined);
  assert.equal(limitHeapGrowth(['--heap_growing_percent', '50']), undefined);
  assert.equal(
    limitHeapGrowth(['--heap-growing-percentage=50']),
    `--heap-growing-percent=${HEAP_GROWING_PERCENT}`,
  );
});

/**
 * The same workload in two fresh processes, one of them calling limitHeapGrowth first: about
 * 30 MB that stays live, and objects that live long enough to reach the old generation and then
 * die. Returns the old generation's largest size in MB.
 */
function peakOldSpaceMb(limit: boolean): number {
  const script = `
    import { getHeapSpaceStatistics } from 'node:v8';
    import { limitHeapGrowth } from ${JSON.stringify(MODULE)};
    if (${limit}) limitHeapGrowth([]);
    const live = [];
    for (let i = 0; i < 300000; i++) live.push({ i, s: 'live-' + i });
    globalThis.live = live;
    let churn = [];
    let peak = 0;
    for (let round = 0; round < 300; round++) {
      for (let i = 0; i < 20000; i++) churn.push({ round, i, s: 'c-' + i });
      if (churn.length > 200000) churn = [];
      const old = getHeapSpaceStatistics().find((s) => s.space_name === 'old_space');
      peak = Math.max(peak, old.space_size);
    }
    process.stdout.write(String(peak / 1048576));`;
  const out = execFileSync(
    process.execPath,
    ['--max-semi-space-size=4', '--import', 'tsx', '--input-type=module', '-e', script],
    { encoding: 'utf8', timeout: 60_000 },
  );
  return Number(out);
}

test('V8 honours the step set at run time: the old generation stays near its live data', () => {
  const unlimited = peakOldSpaceMb(false);
  const limited = peakOldSpaceMb(true);
  // Measured here: 65-68 MB with the step against 148-166 MB by V8's own choice.
  assert.ok(
    limited < unlimited * 0.7,
    `old generation peaked at ${limited.toFixed(1)} MB with the step, ${unlimited.toFixed(1)} MB without`,
  );
});
