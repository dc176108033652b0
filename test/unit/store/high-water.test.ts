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
import type { HRS } from '../../../src/cometbft/types.ts';
import {
  HighWaterMarks,
  highWaterFile,
  type MarkStorage,
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

/** Resolves once `cond()` holds (bounded). */
async function waitFor(cond: () => boolean, ms = 2_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** Asynchronous storage whose writes take a few ms; it counts writes of one chain that overlap. */
class SlowStorage implements MarkStorage {
  readonly durable = new Map<string, HRS>();
  readonly log: Array<[string, bigint]> = [];
  readonly #inFlight = new Set<string>();
  overlaps = 0;
  maxParallel = 0;
  failNext = false;
  read(chainId: string): HRS | undefined {
    return this.durable.get(chainId);
  }
  async write(chainId: string, h: HRS): Promise<void> {
    if (this.#inFlight.has(chainId)) this.overlaps++;
    this.#inFlight.add(chainId);
    this.maxParallel = Math.max(this.maxParallel, this.#inFlight.size);
    try {
      await new Promise((r) => setTimeout(r, 3));
      if (this.failNext) {
        this.failNext = false;
        throw new Error('disk failed');
      }
      this.durable.set(chainId, { ...h });
      this.log.push([chainId, h.height]);
    } finally {
      this.#inFlight.delete(chainId);
    }
  }
}

describe('HighWaterMarks', () => {
  it('starts unknown, only ever rises, and survives a restart', async () => {
    const home = newHome();
    const marks = new HighWaterMarks(home);
    assert.equal(marks.get(CHAIN), undefined);
    await marks.raiseDurably(CHAIN, hrs(10n));
    await marks.raiseDurably(CHAIN, hrs(9n, 5, 3));
    assert.deepEqual(marks.get(CHAIN), hrs(10n));
    await marks.raiseDurably(CHAIN, hrs(10n, 0, 3));
    assert.deepEqual(readHighWater(home, CHAIN), hrs(10n, 0, 3));
    assert.deepEqual(new HighWaterMarks(home).get(CHAIN), hrs(10n, 0, 3));
    // two 512-byte slots, the size never changes
    assert.equal(readFileSync(highWaterFile(home, CHAIN)).length, 1024);
  });

  it('a write torn in the slot being replaced leaves the previous mark readable', async () => {
    const home = newHome();
    const marks = new HighWaterMarks(home);
    await marks.raiseDurably(CHAIN, hrs(1n));
    await marks.raiseDurably(CHAIN, hrs(2n)); // slot 1
    await marks.raiseDurably(CHAIN, hrs(3n)); // slot 0
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
    await again.raiseDurably(CHAIN, hrs(4n));
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
    // later flushes are asynchronous writes of the second slot
    marks.observe(CHAIN, hrs(22n));
    await waitFor(() => readHighWater(home, CHAIN)?.height === 22n);
  });

  it('never overlaps two writes of one chain, and ends durable at the highest mark', async () => {
    const storage = new SlowStorage();
    const marks = new HighWaterMarks(storage);
    const raises = [marks.raiseDurably(CHAIN, hrs(1n)), marks.raiseDurably(CHAIN, hrs(3n))];
    marks.observe(CHAIN, hrs(4n));
    raises.push(marks.raiseDurably(CHAIN, hrs(2n)), marks.raiseDurably('other', hrs(9n)));
    await Promise.all(raises);
    await waitFor(() => storage.durable.get(CHAIN)?.height === 4n);
    assert.equal(storage.overlaps, 0, 'one write per chain at a time');
    assert.ok(storage.maxParallel >= 2, 'writes of different chains run together');
    // every write went up, never down
    const heights = storage.log.filter(([c]) => c === CHAIN).map(([, h]) => h);
    assert.deepEqual(
      heights,
      [...heights].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)),
    );
  });

  it('a raise whose write fails rejects, and the next raise writes again', async () => {
    const storage = new SlowStorage();
    const marks = new HighWaterMarks(storage);
    storage.failNext = true;
    await assert.rejects(marks.raiseDurably(CHAIN, hrs(5n)), /disk failed/);
    assert.equal(storage.durable.get(CHAIN), undefined);
    await marks.raiseDurably(CHAIN, hrs(5n));
    assert.deepEqual(storage.durable.get(CHAIN), hrs(5n));
  });

  it('writeHighWaterFile sets any mark, lower included (the operator reset)', async () => {
    const home = newHome();
    await new HighWaterMarks(home).raiseDurably(CHAIN, hrs(50n));
    writeHighWaterFile(home, CHAIN, hrs(5n));
    assert.deepEqual(new HighWaterMarks(home).get(CHAIN), hrs(5n));
  });
});
