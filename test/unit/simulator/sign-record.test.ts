import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Rng } from '../../../src/simulator/rng.ts';
import { SignRecord } from '../../../src/simulator/sign-record.ts';
import { percentile } from '../../../src/simulator/simulator.ts';

const entry = (bytes: number[], source = 'a') => ({
  signBytes: Uint8Array.from(bytes),
  signature: new Uint8Array(64),
  source,
});
const hrs = { height: 5n, round: 0, step: 2 };

describe('SignRecord', () => {
  it('accepts repeats of the same sign bytes at one HRS', () => {
    const r = new SignRecord();
    assert.equal(r.record('c', hrs, entry([1, 2])), 'new');
    assert.equal(r.record('c', hrs, entry([1, 2], 'b')), 'repeat');
    assert.equal(r.doubleSigns.length, 0);
  });

  it('flags different sign bytes at one HRS of one chain, across sources', () => {
    const r = new SignRecord();
    r.record('c', hrs, entry([1, 2], 'sentry-1'));
    assert.equal(r.record('c', hrs, entry([1, 3], 'sentry-2')), 'double-sign');
    assert.equal(r.doubleSigns.length, 1);
    const d = r.doubleSigns[0];
    assert.equal(d?.first.source, 'sentry-1');
    assert.equal(d?.second.source, 'sentry-2');
    assert.equal(d?.height, 5n);
  });

  it('keeps chains, rounds and steps apart', () => {
    const r = new SignRecord();
    r.record('c', hrs, entry([1]));
    assert.equal(r.record('d', hrs, entry([2])), 'new');
    assert.equal(r.record('c', { ...hrs, round: 1 }, entry([3])), 'new');
    assert.equal(r.record('c', { ...hrs, step: 3 }, entry([4])), 'new');
    assert.equal(r.size, 4);
    assert.equal(r.doubleSigns.length, 0);
  });
});

describe('Rng', () => {
  it('is deterministic per seed', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const c = new Rng(43);
    const xs = Array.from({ length: 8 }, () => a.next());
    assert.deepEqual(
      xs,
      Array.from({ length: 8 }, () => b.next()),
    );
    assert.notDeepEqual(
      xs,
      Array.from({ length: 8 }, () => c.next()),
    );
    assert.ok(xs.every((x) => x >= 0 && x < 1));
  });

  it('never draws for a zero chance', () => {
    const a = new Rng(1);
    const b = new Rng(1);
    assert.equal(a.chance(0), false);
    assert.equal(a.next(), b.next());
  });
});

describe('percentile', () => {
  it('uses the nearest rank', () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    assert.equal(percentile(xs, 0.5), 50);
    assert.equal(percentile(xs, 0.99), 99);
    assert.equal(percentile([7], 0.99), 7);
    assert.equal(percentile([], 0.5), 0);
  });
});
