import assert from 'node:assert/strict';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  HighWaterMarks,
  highWaterFile,
  readHighWater,
  writeHighWaterFile,
} from '../../../src/store/high-water.ts';

const CHAIN = 'hw-chain';
const homes: string[] = [];
after(() => {
  for (const h of homes) rmSync(h, { recursive: true, force: true });
});

function newHome(): string {
  const home = mkdtempSync(join(tmpdir(), 'cometkms-hw-'));
  mkdirSync(join(home, 'state'));
  homes.push(home);
  return home;
}

const hrs = (height: bigint, round = 0, step = 2) => ({ height, round, step });

describe('HighWaterMarks', () => {
  it('starts unknown, only ever rises, and survives a restart', () => {
    const home = newHome();
    const marks = new HighWaterMarks(home);
    assert.equal(marks.get(CHAIN), undefined);
    marks.raise(CHAIN, hrs(10n));
    marks.raise(CHAIN, hrs(9n, 5, 3));
    assert.deepEqual(marks.get(CHAIN), hrs(10n));
    marks.raise(CHAIN, hrs(10n, 0, 3));
    assert.deepEqual(readHighWater(home, CHAIN), hrs(10n, 0, 3));
    assert.deepEqual(new HighWaterMarks(home).get(CHAIN), hrs(10n, 0, 3));
    // two 512-byte slots, the size never changes
    assert.equal(readFileSync(highWaterFile(home, CHAIN)).length, 1024);
  });

  it('a write torn in the slot being replaced leaves the previous mark readable', () => {
    const home = newHome();
    const marks = new HighWaterMarks(home);
    marks.raise(CHAIN, hrs(1n));
    marks.raise(CHAIN, hrs(2n)); // slot 1
    marks.raise(CHAIN, hrs(3n)); // slot 0
    // tear slot 0 (the newest) as a crash in the middle of its pwrite would: its tail is lost
    const fd = openSync(highWaterFile(home, CHAIN), 'r+');
    try {
      writeSync(fd, Buffer.alloc(200, 0), 0, 200, 100);
    } finally {
      closeSync(fd);
    }
    assert.deepEqual(readHighWater(home, CHAIN), hrs(2n));
    // the next raise goes to the torn slot and is newest again
    const again = new HighWaterMarks(home);
    again.raise(CHAIN, hrs(4n));
    assert.deepEqual(readHighWater(home, CHAIN), hrs(4n));
  });

  it('a file with no valid record is an error, never "nothing seen"', () => {
    const home = newHome();
    writeHighWaterFile(home, CHAIN, hrs(7n));
    writeFileSync(highWaterFile(home, CHAIN), Buffer.alloc(1024, 0x20));
    assert.throws(() => readHighWater(home, CHAIN), /is damaged: this node cannot tell/);
    assert.throws(() => new HighWaterMarks(home).get(CHAIN), /is damaged/);
  });

  it("a record of another chain is not this chain's mark", () => {
    const home = newHome();
    writeHighWaterFile(home, 'other', hrs(7n));
    writeFileSync(highWaterFile(home, CHAIN), readFileSync(highWaterFile(home, 'other')));
    assert.throws(() => readHighWater(home, CHAIN), /is damaged/);
  });

  it('observe raises in memory at once and on disk soon after', async () => {
    const home = newHome();
    const marks = new HighWaterMarks(home);
    marks.observe(CHAIN, hrs(20n));
    marks.observe(CHAIN, hrs(21n));
    assert.deepEqual(marks.get(CHAIN), hrs(21n));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(readHighWater(home, CHAIN), hrs(21n));
  });

  it('writeHighWaterFile sets any mark, lower included (the operator reset)', () => {
    const home = newHome();
    new HighWaterMarks(home).raise(CHAIN, hrs(50n));
    writeHighWaterFile(home, CHAIN, hrs(5n));
    assert.deepEqual(new HighWaterMarks(home).get(CHAIN), hrs(5n));
  });
});
