/**
 * The single-node store's write-ahead log (src/store/file.ts, state-log.ts, seal.ts): recovery
 * after a crash cut at every byte of the last records, compaction interleaved with writes and
 * lock-free reads, restored older copies refused (also across compactions), a second writer
 * noticed, and the migration of a 0.1 home.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { StateStoreError } from '../../../src/store/errors.ts';
import { chainFiles, FileSignStateStore, readChainState } from '../../../src/store/file.ts';
import { legacyChainFiles } from '../../../src/store/legacy-files.ts';
import { chainTag, readSeal } from '../../../src/store/seal.ts';
import {
  encodeHwmFile,
  encodeStateFile,
  type StoredState,
  stateChecksum,
} from '../../../src/store/state-codec.ts';
import {
  decodeHeader,
  encodeRecord,
  RecordKind,
  recordLength,
  saltCrc,
  scanSegment,
} from '../../../src/store/state-log.ts';
import { freshSignState, type SignState } from '../../../src/store/types.ts';

const CHAIN = 'log-chain-1';
/** Small segments, so that compaction happens every few dozen records. */
const SMALL = 8192;
let root: string;
let n = 0;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'cometkms-log-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function newHome(): Promise<string> {
  const home = join(root, `home-${n++}`);
  await mkdir(join(home, 'state'), { recursive: true });
  return home;
}

const bytes = (len: number, seed: number): Uint8Array =>
  Uint8Array.from({ length: len }, (_, i) => (seed + i) % 251);

/** The reservation a validator would make at (height, round, step), with real-sized bytes. */
function reservation(height: bigint, round: number, step: number, extension = 0): SignState {
  return {
    height,
    round,
    step,
    signBytes: bytes(110, Number(height) + step),
    extensionSignBytes: bytes(extension, Number(height)),
    signature: new Uint8Array(),
  };
}

const signed = (s: SignState, seed: number): SignState => ({ ...s, signature: bytes(64, seed) });

async function withStore<T>(
  home: string,
  fn: (s: FileSignStateStore) => Promise<T>,
  segmentBytes = SMALL,
): Promise<T> {
  const s = await FileSignStateStore.open(home, { segmentBytes });
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

async function openError(home: string): Promise<Error> {
  const err = await FileSignStateStore.open(home, { chainIds: [CHAIN] }).then(
    async (s) => {
      await s.close();
      return undefined;
    },
    (e: unknown) => e,
  );
  assert.ok(err instanceof StateStoreError, `expected a StateStoreError, got ${String(err)}`);
  return err;
}

describe('crash recovery', () => {
  test('a crash cut at every byte of the last two records recovers to the last complete record, never beyond or below', async () => {
    // History: created S0; reservation R1 (with a vote extension); its durable signature; R2.
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    const S0 = freshSignState(9n);
    const R1 = reservation(10n, 0, 3, 300);
    const R2 = reservation(11n, 0, 1);
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, S0);
      await s.reserve(CHAIN, S0, R1);
      await s.readyToReturn(CHAIN);
    });
    // The seal on disk while the signature record and R2 were written: it names R1 (the store
    // seals a reservation before it appends the next one).
    const sealAtR1 = await readFile(files.seal);
    await withStore(home, async (s) => {
      await s.recordSignature(CHAIN, R1, signed(R1, 7).signature, { durable: true });
      await s.reserve(CHAIN, signed(R1, 7), R2);
    });
    const full = await readFile(files.log);
    const records = scanSegment(full).records;
    assert.deepEqual(
      records.map((r) => r.kind),
      [RecordKind.Created, RecordKind.Reservation, RecordKind.Signature, RecordKind.Reservation],
    );
    const sig = records[2]!;
    const r2 = records[3]!;
    const sigEnd = sig.offset + sig.length;
    const r2End = r2.offset + r2.length;

    let cases = 0;
    for (let cut = sig.offset; cut <= r2End; cut++) {
      // The record being written when the power went: bytes from `cut` to its end never made it.
      const writing = cut < sigEnd ? sig : r2;
      const writingEnd = writing.offset + writing.length;
      for (const leftover of ['zeros', 'garbage'] as const) {
        if (leftover === 'garbage' && cut >= writingEnd) continue;
        const log = Buffer.from(full);
        log.fill(0, cut, r2End);
        if (leftover === 'garbage') randomBytes(writingEnd - cut).copy(log, cut);
        // A record is on disk when all its bytes are (a record that ends in zero bytes, e.g. empty
        // signature and extension, is whole once the last non-zero byte is).
        const whole = (r: { offset: number; length: number }): boolean =>
          log.subarray(r.offset, r.offset + r.length).equals(full.subarray(r.offset, r.offset + r.length));
        const expected = whole(r2) ? R2 : whole(sig) ? signed(R1, 7) : R1;
        const h = await newHome();
        const f = chainFiles(h, CHAIN);
        await writeFile(f.log, log, { mode: 0o600 });
        await writeFile(f.seal, sealAtR1, { mode: 0o600 });
        const what = `cut at byte ${cut - sig.offset} of the last two records (${leftover})`;
        assert.deepEqual(await readChainState(h, CHAIN), expected, what);
        const goOn = cut % 8 === 0 || cut === writingEnd;
        await withStore(h, async (s) => {
          assert.deepEqual(await s.load(CHAIN), expected, what);
          // the recovered log goes on: the next reservation lands and reads back
          if (goOn)
            assert.deepEqual(await s.reserve(CHAIN, expected, reservation(12n, 0, 2)), { ok: true }, what);
        });
        if (goOn) {
          assert.deepEqual(await readChainState(h, CHAIN), reservation(12n, 0, 2), what);
          const reread = scanSegment(await readFile(f.log));
          assert.ok(reread.cleanTail, `${what}: no leftover behind the records`);
        }
        await rm(h, { recursive: true });
        cases++;
      }
    }
    assert.ok(cases > 2 * (r2End - sig.offset) - 4, `${cases} cuts tried`);
  });

  test('the seal names a reservation once readyToReturn resolves, not only at close', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, freshSignState());
      const r = reservation(5n, 0, 2);
      await s.reserve(CHAIN, freshSignState(), r);
      await s.readyToReturn(CHAIN);
      const { seal } = readSeal(await readFile(files.seal), chainTag(CHAIN));
      assert.equal(seal.generation, 2n);
      assert.deepEqual([seal.height, seal.round, seal.step], [5n, 0, 2]);
    });
  });
});

describe('compaction', () => {
  test('interleaved with reservations, signature records and lock-free reads: nothing goes backwards', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    const s = await FileSignStateStore.open(home, { segmentBytes: SMALL });
    /** segments seen, by salt (inode numbers of replaced files are reused) */
    const segments = new Set<string>();
    let acknowledged: SignState = freshSignState(1n);
    await s.initialize(CHAIN, acknowledged);
    let reading = true;
    let reads = 0;
    // A reader next to the running store (`state show`): never an error, never below what was
    // acknowledged before the read began.
    const reader = (async () => {
      while (reading) {
        const floor = acknowledged;
        const seen = await readChainState(home, CHAIN);
        assert.ok(seen !== undefined);
        assert.ok(
          seen.height > floor.height || (seen.height === floor.height && seen.step >= floor.step),
          `read ${seen.height}/${seen.step} below ${floor.height}/${floor.step}`,
        );
        reads++;
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    try {
      for (let h = 2n; h < 102n; h++) {
        for (const step of [1, 2, 3]) {
          const next = reservation(h, 0, step, step === 3 ? 40 : 0);
          assert.deepEqual(await s.reserve(CHAIN, acknowledged, next), { ok: true });
          await s.readyToReturn(CHAIN);
          acknowledged = next;
          const sig = bytes(64, Number(h) * 3 + step);
          const durable = step === 1 && h % 5n === 0n;
          await s.recordSignature(CHAIN, next, sig, { durable });
          acknowledged = { ...next, signature: sig };
          segments.add(decodeHeader(await readFile(files.log)).salt.toString('hex'));
        }
        if (h % 25n === 0n) assert.deepEqual(await s.load(CHAIN), acknowledged);
      }
    } finally {
      reading = false;
      await reader;
      await s.close();
    }
    assert.ok(segments.size > 10, `the log was compacted ${segments.size - 1} times`);
    assert.ok(reads > 10, `${reads} lock-free reads`);
    const segment = scanSegment(await readFile(files.log));
    assert.equal(segment.records[0]!.kind, RecordKind.Checkpoint);
    assert.ok((await stat(files.log)).size <= 2 * SMALL);
    await withStore(home, async (st) => assert.deepEqual(await st.load(CHAIN), acknowledged));
    // nothing left behind but the pair
    assert.equal((await readdir(join(home, 'state'))).length, 2);
  });

  test('a log copied back from before a compaction is refused', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    let state: SignState = freshSignState(1n);
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, state);
      for (let h = 2n; h < 5n; h++) {
        const next = reservation(h, 0, 2);
        await s.reserve(CHAIN, state, next);
        state = next;
      }
    });
    await copyFile(files.log, join(root, 'before-compaction.log'));
    const salt = decodeHeader(await readFile(files.log)).salt;
    await withStore(home, async (s) => {
      for (let h = 5n; h < 120n; h++) {
        const next = reservation(h, 0, 2);
        await s.reserve(CHAIN, state, next);
        await s.readyToReturn(CHAIN);
        state = next;
      }
    });
    assert.ok(!decodeHeader(await readFile(files.log)).salt.equals(salt), 'compacted');
    await copyFile(join(root, 'before-compaction.log'), files.log);
    assert.match((await openError(home)).message, /older than its seal/);
    await assert.rejects(readChainState(home, CHAIN), /older than its seal/);
  });

  test('a record larger than the segment gets a segment of its own size', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    const big = reservation(3n, 0, 3, 200_000);
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, freshSignState(2n));
      await s.reserve(CHAIN, freshSignState(2n), big);
    });
    assert.ok((await stat(files.log)).size > 200_000 * 2);
    assert.deepEqual(await readChainState(home, CHAIN), big);
    await withStore(home, async (s) => assert.deepEqual(await s.load(CHAIN), big));
  });
});

describe('a second writer', () => {
  test('a record appended by someone else is noticed before the next write, and the chain stops', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    const s = await FileSignStateStore.open(home, { segmentBytes: SMALL });
    try {
      const R1 = reservation(2n, 0, 1);
      await s.initialize(CHAIN, freshSignState(1n));
      await s.reserve(CHAIN, freshSignState(1n), R1);
      // Another process that got around the home lock appends a valid record at the tail.
      const segment = scanSegment(await readFile(files.log));
      const other = reservation(2n, 0, 2);
      const record = Buffer.alloc(recordLength(other));
      encodeRecord(record, saltCrc(segment.header.salt), RecordKind.Reservation, 3n, other);
      const log = await readFile(files.log);
      record.copy(log, segment.end);
      // Written in place within the same size, as a second writer would.
      await writeFile(files.log, log);
      await assert.rejects(s.reserve(CHAIN, R1, reservation(2n, 0, 3)), /changed behind this process/);
      await assert.rejects(s.load(CHAIN), /changed behind this process/);
    } finally {
      await s.close();
    }
  });
});

describe('migration from the 0.1 layout', () => {
  /** Writes a 0.1 home's two files for `stored` (as 0.1 wrote them). */
  async function writeLegacy(
    home: string,
    stored: StoredState,
    hwmGeneration = stored.generation,
  ): Promise<void> {
    const files = legacyChainFiles(home, stored.chainId);
    await writeFile(files.state, encodeStateFile(stored), { mode: 0o600 });
    const hwmOf = { ...stored, generation: hwmGeneration };
    await writeFile(
      files.hwm,
      encodeHwmFile({
        chainId: stored.chainId,
        generation: hwmGeneration,
        height: stored.state.height,
        round: stored.state.round,
        step: stored.state.step,
        stateChecksum: stateChecksum(hwmOf),
      }),
      { mode: 0o600 },
    );
  }

  const OLD: StoredState = { chainId: CHAIN, generation: 41n, state: signed(reservation(77n, 1, 2), 3) };

  test('a 0.1 home is read as is, then moved into a log at its generation on the first open', async () => {
    const home = await newHome();
    const legacy = legacyChainFiles(home, CHAIN);
    await writeLegacy(home, OLD);
    assert.deepEqual(await readChainState(home, CHAIN), OLD.state);
    await withStore(home, async (s) => {
      assert.deepEqual(await s.load(CHAIN), OLD.state);
      const next = reservation(77n, 1, 3);
      assert.deepEqual(await s.reserve(CHAIN, OLD.state, next), { ok: true });
    });
    await assert.rejects(stat(legacy.state), { code: 'ENOENT' });
    await assert.rejects(stat(legacy.hwm), { code: 'ENOENT' });
    const records = scanSegment(await readFile(chainFiles(home, CHAIN).log)).records;
    assert.deepEqual(
      records.map((r) => [r.kind, r.generation]),
      [
        [RecordKind.Migrated, 41n],
        [RecordKind.Reservation, 42n],
      ],
    );
    assert.deepEqual(records[0]!.state, OLD.state);
    assert.deepEqual(await readChainState(home, CHAIN), reservation(77n, 1, 3));
  });

  test('a 0.1 home the 0.1 rules refuse is refused, and nothing is migrated', async () => {
    const home = await newHome();
    // a restored backup of the state file: generation 41, its record says 43
    await writeLegacy(home, OLD, 43n);
    const err = await openError(home);
    assert.match(err.message, /older than expected/);
    await assert.rejects(stat(chainFiles(home, CHAIN).log), { code: 'ENOENT' });
  });

  test('a crash between writing the log and removing the 0.1 files: the log wins, the 0.1 files go', async () => {
    const home = await newHome();
    await writeLegacy(home, OLD);
    await withStore(home, async (s) => assert.deepEqual(await s.load(CHAIN), OLD.state));
    await writeLegacy(home, OLD);
    await withStore(home, async (s) => assert.deepEqual(await s.load(CHAIN), OLD.state));
    assert.deepEqual((await readdir(join(home, 'state'))).length, 2);
  });

  test('0.1 files ahead of the log are not a migration leftover: refused', async () => {
    const home = await newHome();
    await writeLegacy(home, OLD);
    await withStore(home, async (s) => assert.deepEqual(await s.load(CHAIN), OLD.state));
    await writeLegacy(home, { ...OLD, generation: 50n });
    assert.match((await openError(home)).message, /ahead of the chain's log/);
  });

  test('state init refuses a chain that has 0.1 files', async () => {
    const home = await newHome();
    await writeLegacy(home, OLD);
    await withStore(home, (s) =>
      assert.rejects(s.initialize(CHAIN, freshSignState()), /already has sign state/),
    );
  });
});
