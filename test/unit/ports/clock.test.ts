import assert from 'node:assert/strict';
import { test } from 'node:test';
import { systemClock } from '../../../src/ports/clock.ts';

test('the system clock does not follow a wall-clock jump (lease and heartbeat deadlines stay true)', (t) => {
  const before = systemClock.now();
  const wall = Date.now();
  // An hour forward on the wall clock, as NTP or an operator could do.
  t.mock.method(Date, 'now', () => wall + 3_600_000);
  const after = systemClock.now();
  assert.ok(after >= before, 'monotonic');
  assert.ok(after - before < 60_000, `moved ${after - before} ms, not the jump`);
});
