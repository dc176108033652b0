import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseDuration } from '../../../src/cli/duration.ts';

describe('parseDuration', () => {
  it('parses ms, s, m and h', () => {
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('1s'), 1000);
    assert.equal(parseDuration('1.5s'), 1500);
    assert.equal(parseDuration('2m'), 120_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration('0s'), 0);
  });

  it('rejects missing units and malformed values', () => {
    for (const bad of ['5', '', 's', '-1s', '1 s', '1d', '1e3ms', 'abc']) {
      assert.throws(() => parseDuration(bad), /invalid duration/, bad);
    }
  });
});
