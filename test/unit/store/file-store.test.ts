import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { StateMissingError, StateStoreError } from '../../../src/store/errors.ts';
import { chainFiles, FileSignStateStore, readChainState } from '../../../src/store/file.ts';
import { chainFileStem } from '../../../src/store/paths.ts';
import { chainTag, readSeal } from '../../../src/store/seal.ts';
import { RecordKind, scanSegment } from '../../../src/store/state-log.ts';
import { freshSignState, type SignState } from '../../../src/store/types.ts';

const CHAIN = 'test-chain-1';
let root: string;
let n = 0;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'cometkms-store-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function newHome(): Promise<string> {
  const home = join(root, `home-${n++}`);
  await mkdir(join(home, 'state'), { recursive: true });
  return home;
}

function state(height: bigint, round: number, step: number, bytes: number[], sig: number[] = []): SignState {
  return {
    height,
    round,
    step,
    signBytes: new Uint8Array(bytes),
    extensionSignBytes: new Uint8Array(),
    signature: new Uint8Array(sig),
  };
}

/** Opens, runs `fn`, closes. */
async function withStore<T>(home: string, fn: (s: FileSignStateStore) => Promise<T>): Promise<T> {
  const s = await FileSignStateStore.open(home);
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

async function openError(home: string, chainId = CHAIN): Promise<StateStoreError> {
  const err = await FileSignStateStore.open(home, { chainIds: [chainId] }).then(
    async (s) => {
      await s.close();
      return undefined;
    },
    (e: unknown) => e,
  );
  assert.ok(err instanceof StateStoreError, `expected a StateStoreError, got ${String(err)}`);
  return err;
}

const S1 = state(10n, 0, 1, [1, 2, 3]);
const S2 = state(10n, 0, 2, [4, 5, 6]);
const S3 = state(11n, 0, 1, [7, 8, 9]);

describe('FileSignStateStore basics', () => {
  test('a chain without files has NO state (never an empty one) and nothing is written', async () => {
    const home = await newHome();
    await withStore(home, async (s) => {
      assert.equal(await s.load(CHAIN), undefined);
      await assert.rejects(s.reserve(CHAIN, freshSignState(), S1), StateMissingError);
    });
    assert.deepEqual(await readdir(join(home, 'state')), []);
    const err = await openError(home);
    assert.ok(err instanceof StateMissingError);
    assert.match(err.message, /cometkms state init --config <config.toml> --chain "test-chain-1" --height/);
    assert.match(err.message, /cometkms state import --config <config.toml> --chain "test-chain-1" --from/);
  });

  test('initialize creates a chain that has none, and refuses one that has any file', async () => {
    const home = await newHome();
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, freshSignState(7n));
      assert.deepEqual(await s.load(CHAIN), freshSignState(7n));
      await assert.rejects(s.initialize(CHAIN, freshSignState()), /already has sign state/);
    });
    // the seal alone is enough to refuse: a lost log is not a chain without state
    await rm(chainFiles(home, CHAIN).log);
    await withStore(home, (s) =>
      assert.rejects(s.initialize(CHAIN, freshSignState()), /already has sign state/),
    );
  });

  test('a recorded signature asked to be durable is on disk when the call resolves', async () => {
    const home = await newHome();
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, S1);
      await s.recordSignature(CHAIN, S1, new Uint8Array([6]), { durable: true });
      assert.deepEqual(await readChainState(home, CHAIN), { ...S1, signature: new Uint8Array([6]) });
    });
  });

  test('a state file deleted or replaced behind the running store stops that chain before any write', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, S1);
      await s.initialize('other', S1);
      await rm(files.log);
      await rm(files.seal);
      await assert.rejects(s.reserve(CHAIN, S1, S2), /changed behind this process/);
      // never written back, and the chain stays stopped (no re-read of whatever appears there)
      assert.equal(await readChainState(home, CHAIN), undefined);
      await assert.rejects(s.load(CHAIN), /changed behind this process/);
      // other chains go on
      assert.deepEqual(await s.reserve('other', S1, S2), { ok: true });
    });
    // a log written by someone else at the same path is noticed too (inode, size, mtime, and
    // its salt: a same-size copy within one timestamp tick)
    const other = await newHome();
    await withStore(other, (s) => s.initialize(CHAIN, S3));
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, S1);
      assert.deepEqual(await s.load(CHAIN), S1);
      await copyFile(chainFiles(other, CHAIN).log, files.log);
      await assert.rejects(s.reserve(CHAIN, S1, S2), /changed behind this process/);
    });
  });

  test('reserve is a compare-and-set that persists across reopen', async () => {
    const home = await newHome();
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, S1);
      // a stale expectation fails and reports the current state
      assert.deepEqual(await s.reserve(CHAIN, freshSignState(), S2), { ok: false, current: S1 });
      // expected must match in every field, the signature included
      assert.deepEqual((await s.reserve(CHAIN, { ...S1, signature: new Uint8Array([9]) }, S2)).ok, false);
      assert.deepEqual(await s.reserve(CHAIN, S1, S2), { ok: true });
    });
    await withStore(home, async (s) => assert.deepEqual(await s.load(CHAIN), S2));
  });

  test('concurrent reserves from one expected state: exactly one wins', async () => {
    const home = await newHome();
    await withStore(home, async (s) => {
      const nexts = Array.from({ length: 8 }, (_, i) => state(BigInt(i + 1), 0, 1, [i]));
      await s.initialize(CHAIN, freshSignState());
      const results = await Promise.all(nexts.map((next) => s.reserve(CHAIN, freshSignState(), next)));
      const winners = results.flatMap((r, i) => (r.ok ? [i] : []));
      assert.equal(winners.length, 1);
      const winner = nexts[winners[0]!]!;
      for (const r of results) if (!r.ok) assert.deepEqual(r.current, winner);
      assert.deepEqual(await s.load(CHAIN), winner);
    });
  });

  test('a recorded signature reaches the disk with the next reservation or at close, never before the reservation', async () => {
    const home = await newHome();
    const S2r = { ...S2, signBytes: new Uint8Array([7, 7]) };
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, S1);
      await s.recordSignature(CHAIN, S1, new Uint8Array([4]), { durable: false });
      // In memory at once; on disk the reservation alone (a crash now re-signs the reserved bytes).
      assert.deepEqual((await s.load(CHAIN))?.signature, new Uint8Array([4]));
      assert.deepEqual(await readChainState(home, CHAIN), S1);
      await s.reserve(CHAIN, { ...S1, signature: new Uint8Array([4]) }, S2r);
      assert.deepEqual(await readChainState(home, CHAIN), S2r);
      await s.recordSignature(CHAIN, S2r, new Uint8Array([5]), { durable: false });
    });
    // close() wrote the last one.
    assert.deepEqual(await readChainState(home, CHAIN), { ...S2r, signature: new Uint8Array([5]) });
  });

  test('recordSignature writes only at the same HRS and sign bytes', async () => {
    const home = await newHome();
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, S1);
      await s.recordSignature(CHAIN, { ...S2, signBytes: S1.signBytes }, new Uint8Array([1]), {
        durable: false,
      }); // other HRS
      await s.recordSignature(CHAIN, { ...S1, signBytes: new Uint8Array([9]) }, new Uint8Array([2]), {
        durable: false,
      }); // other bytes
      assert.deepEqual(await s.load(CHAIN), S1);
      await s.recordSignature(CHAIN, S1, new Uint8Array([3]), { durable: false });
      assert.deepEqual(await s.load(CHAIN), { ...S1, signature: new Uint8Array([3]) });
    });
    await withStore(home, async (s) =>
      assert.deepEqual((await s.load(CHAIN))?.signature, new Uint8Array([3])),
    );
  });

  test('the log and its seal are 0600 and carry chain id, generations and checksums', async () => {
    const home = await newHome();
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, S1);
      await s.reserve(CHAIN, S1, S2);
    });
    const files = chainFiles(home, CHAIN);
    for (const f of [files.log, files.seal]) assert.equal((await stat(f)).mode & 0o777, 0o600);
    const log = scanSegment(await readFile(files.log));
    assert.equal(log.header.chainId, CHAIN);
    assert.deepEqual(
      log.records.map((r) => [r.kind, r.generation, r.state]),
      [
        [RecordKind.Created, 1n, S1],
        [RecordKind.Reservation, 2n, S2],
      ],
    );
    assert.ok(log.cleanTail);
    const { seal } = readSeal(await readFile(files.seal), chainTag(CHAIN));
    assert.equal(seal.generation, 2n);
    assert.equal(seal.crc, log.records[1]!.crc);
    assert.deepEqual([seal.height, seal.round, seal.step], [10n, 0, 2]);
  });

  test('chain ids that are unsafe file names map to distinct files inside state/', async () => {
    const ids = ['../../etc/passwd', 'a/b', 'a_b', 'a b', '.', '', 'x'.repeat(200)];
    const stems = ids.map(chainFileStem);
    assert.equal(new Set(stems).size, ids.length);
    for (const s of stems) assert.match(s, /^[A-Za-z0-9_-]+$/);
    const home = await newHome();
    const s = await FileSignStateStore.open(home);
    try {
      for (const id of ids) await s.initialize(id, S1);
      for (const id of ids) assert.deepEqual(await s.load(id), S1);
    } finally {
      await s.close();
    }
    assert.equal((await readdir(join(home, 'state'))).length, ids.length * 2);
  });

  test('a closed store refuses every call', async () => {
    const home = await newHome();
    const s = await FileSignStateStore.open(home);
    await s.close();
    await assert.rejects(s.load(CHAIN), /store is closed/);
    await assert.rejects(s.initialize(CHAIN, S1), /store is closed/);
  });

  test('once close() has begun, a new reservation is refused (it could land after the lock is released)', async () => {
    const home = await newHome();
    const s = await FileSignStateStore.open(home);
    await s.initialize(CHAIN, S1);
    await s.recordSignature(CHAIN, S1, new Uint8Array([4]), { durable: false });
    // A record queued before close() still lands and is written by it.
    const queued = s.recordSignature(CHAIN, S1, new Uint8Array([5]), { durable: false });
    const closing = s.close();
    const late = s.reserve(CHAIN, { ...S1, signature: new Uint8Array([5]) }, S2);
    await assert.rejects(late, /store is closed/);
    await queued;
    await closing;
    assert.deepEqual(await readChainState(home, CHAIN), { ...S1, signature: new Uint8Array([5]) });
  });

  test('open fails on a home without a state directory, telling to run init', async () => {
    const home = join(root, `bare-${n++}`);
    await mkdir(home);
    await assert.rejects(FileSignStateStore.open(home), /does not exist: run `cometkms init --home/);
  });
});

describe('FileSignStateStore home lock', () => {
  test('a second open of the same home fails until the first is closed', async () => {
    const home = await newHome();
    const first = await FileSignStateStore.open(home);
    await assert.rejects(
      FileSignStateStore.open(home),
      new RegExp(`home .* is in use by another cometkms process \\(pid ${process.pid}\\)`),
    );
    await first.close();
    const again = await FileSignStateStore.open(home);
    await again.close();
  });
});

describe('FileSignStateStore detects unusable state', () => {
  test('a log cut inside its header, or holding no complete record, is an error naming the file and the remedy', async () => {
    const home = await newHome();
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    const { log: file } = chainFiles(home, CHAIN);
    const bytes = await readFile(file);
    await writeFile(file, bytes.subarray(0, 2000));
    let err = await openError(home);
    assert.ok(err.message.includes(file));
    assert.match(err.message, /shorter than its header/);
    assert.match(err.message, /cometkms state import .* --force/);
    const cut = Buffer.from(bytes);
    cut.fill(0, 4096 + 20);
    await writeFile(file, cut);
    err = await openError(home);
    assert.match(err.message, /holds no complete record/);
  });

  test('an edited record fails its checksum: the log reads as older than its seal', async () => {
    const home = await newHome();
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, S1);
      await s.reserve(CHAIN, S1, S2);
    });
    const { log: file } = chainFiles(home, CHAIN);
    const bytes = await readFile(file);
    const second = scanSegment(bytes).records[1]!;
    bytes[second.offset + second.length - 1]! ^= 0x01;
    await writeFile(file, bytes);
    assert.match((await openError(home)).message, /older than its seal/);
  });

  test("another chain's files are refused", async () => {
    const home = await newHome();
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    const a = chainFiles(home, CHAIN);
    const b = chainFiles(home, 'other-chain');
    await copyFile(a.log, b.log);
    await copyFile(a.seal, b.seal);
    assert.match((await openError(home, 'other-chain')).message, /belongs to chain "test-chain-1"/);
    await rm(b.log);
    await rm(b.seal);
    await withStore(home, (s) => s.initialize('other-chain', S1));
    await copyFile(a.seal, b.seal);
    assert.match((await openError(home, 'other-chain')).message, /belongs to another chain/);
  });

  test('a restored backup of the log (older than its seal) is an error', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    await copyFile(files.log, join(root, 'backup.log'));
    await withStore(home, async (s) => {
      await s.reserve(CHAIN, S1, S2);
      await s.reserve(CHAIN, S2, S3);
    });
    await copyFile(join(root, 'backup.log'), files.log);
    const err = await openError(home);
    assert.match(err.message, /older than its seal/);
    assert.match(err.message, /generation 1, height\/round\/step 10\/0\/1/);
    assert.match(err.message, /generation 3, height\/round\/step 11\/0\/1/);
    // and load() without the chain in chainIds fails the same way: never a silent reset
    const s = await FileSignStateStore.open(home);
    try {
      await assert.rejects(s.load(CHAIN), /older than its seal/);
      await assert.rejects(s.reserve(CHAIN, S3, { ...S3, step: 2 }), /older than its seal/);
    } finally {
      await s.close();
    }
    // a lock-free reader refuses it too
    await assert.rejects(readChainState(home, CHAIN), /older than its seal/);
  });

  test('a log replaced by another history at the same generation is an error', async () => {
    const a = await newHome();
    const b = await newHome();
    await withStore(a, (s) => s.initialize(CHAIN, S1));
    await withStore(b, (s) => s.initialize(CHAIN, S3));
    await copyFile(chainFiles(b, CHAIN).log, chainFiles(a, CHAIN).log);
    assert.match((await openError(a)).message, /does not hold the record its seal .* names/);
  });

  test('a deleted log with its seal left is an error, not a chain without state', async () => {
    const home = await newHome();
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    await rm(chainFiles(home, CHAIN).log);
    const err = await openError(home);
    assert.ok(!(err instanceof StateMissingError));
    assert.match(
      err.message,
      /missing, but its seal .* says generation 1, height\/round\/step 10\/0\/1 was written/,
    );
  });

  test('a missing seal beyond the first record is an error', async () => {
    const home = await newHome();
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, S1);
      await s.reserve(CHAIN, S1, S2);
    });
    await rm(chainFiles(home, CHAIN).seal);
    assert.match((await openError(home)).message, /\.seal .*missing, but the log is at generation 2/);
  });

  test('a seal more than one reservation behind its log is an error', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    await copyFile(files.seal, join(root, 'seal-backup'));
    await withStore(home, async (s) => {
      await s.reserve(CHAIN, S1, S2);
      await s.reserve(CHAIN, S2, S3);
    });
    await copyFile(join(root, 'seal-backup'), files.seal);
    assert.match((await openError(home)).message, /behind its log by 2 reservations/);
  });
});

describe('FileSignStateStore crash consistency', () => {
  // A reservation is: log record (generation g+1, fdatasync), then the seal (g+1). A crash between
  // them is simulated by putting back the seal as it was before the reservation.

  test('crash after the log record, before the seal: the newer state is kept and the seal repaired', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    const oldSeal = await readFile(files.seal);
    await withStore(home, (s) => s.reserve(CHAIN, S1, S2));
    await writeFile(files.seal, oldSeal);
    assert.deepEqual(await readChainState(home, CHAIN), S2);
    await withStore(home, async (s) => assert.deepEqual(await s.load(CHAIN), S2));
    assert.equal(readSeal(await readFile(files.seal), chainTag(CHAIN)).seal.generation, 2n);
  });

  test('crash while creating the pair (log, no seal yet) is recovered', async () => {
    const home = await newHome();
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    await rm(chainFiles(home, CHAIN).seal);
    assert.deepEqual(await readChainState(home, CHAIN), S1);
    await withStore(home, async (s) => assert.deepEqual(await s.load(CHAIN), S1));
    assert.equal(readSeal(await readFile(chainFiles(home, CHAIN).seal), chainTag(CHAIN)).seal.generation, 1n);
  });

  test('leftover temp files of an interrupted creation or compaction are ignored and removed', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    const leftovers = [`.${chainFileStem(CHAIN)}.log.tmp-1-abcd`, `.${chainFileStem(CHAIN)}.seal.tmp-2-ef01`];
    for (const name of leftovers) await writeFile(join(home, 'state', name), 'partial');
    await withStore(home, async (s) => assert.deepEqual(await s.load(CHAIN), S1));
    assert.deepEqual(
      (await readdir(join(home, 'state'))).sort(),
      [files.log, files.seal].map((f) => f.split('/').at(-1)).sort(),
    );
  });

  test('a log put back one record behind its seal is refused: a crash cannot leave that', async () => {
    // The opposite half-state (seal ahead) is what a restored backup looks like; it must be
    // refused even though it is only one generation behind.
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    const oldLog = await readFile(files.log);
    await withStore(home, (s) => s.reserve(CHAIN, S1, S2));
    await writeFile(files.log, oldLog);
    assert.match((await openError(home)).message, /older than its seal/);
  });

  test('an interrupted forced write (new log, old seal) is refused, not half-applied', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, (s) => s.initialize(CHAIN, S3));
    const oldSeal = await readFile(files.seal);
    const s = await FileSignStateStore.open(home);
    try {
      await s.forceWrite(CHAIN, S1);
    } finally {
      await s.close();
    }
    await writeFile(files.seal, oldSeal);
    assert.match((await openError(home)).message, /does not hold the record its seal/);
  });
});

describe('forceWrite and lock-free reads', () => {
  test('forceWrite replaces an unusable state with a consistent pair at a higher generation', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, S1);
      await s.reserve(CHAIN, S1, S3);
    });
    await writeFile(files.log, 'garbage');
    await openError(home);
    const s = await FileSignStateStore.open(home);
    try {
      await s.forceWrite(CHAIN, S2);
    } finally {
      await s.close();
    }
    await withStore(home, async (st) => assert.deepEqual(await st.load(CHAIN), S2));
    const records = scanSegment(await readFile(files.log)).records;
    assert.deepEqual(
      records.map((r) => [r.kind, r.generation]),
      [[RecordKind.Created, 3n]],
    );
  });

  test('readChainState reads without the lock and applies the same checks', async () => {
    const home = await newHome();
    const s = await FileSignStateStore.open(home);
    try {
      await s.initialize(CHAIN, S1);
      assert.deepEqual(await readChainState(home, CHAIN), S1);
      await writeFile(chainFiles(home, CHAIN).log, 'garbage');
      await assert.rejects(readChainState(home, CHAIN), StateStoreError);
    } finally {
      await s.close();
    }
  });
});
