import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { StateMissingError, StateStoreError } from '../../../src/store/errors.ts';
import { chainFiles, FileSignStateStore, readChainState } from '../../../src/store/file.ts';
import { chainFileStem } from '../../../src/store/paths.ts';
import { decodeHwmFile, decodeStateFile } from '../../../src/store/state-codec.ts';
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
    await rm(chainFiles(home, CHAIN).state);
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
      await rm(files.state);
      await rm(files.hwm);
      await assert.rejects(s.reserve(CHAIN, S1, S2), /changed behind this process/);
      // never written back, and the chain stays stopped (no re-read of whatever appears there)
      assert.equal(await readChainState(home, CHAIN), undefined);
      await assert.rejects(s.load(CHAIN), /changed behind this process/);
      // other chains go on
      assert.deepEqual(await s.reserve('other', S1, S2), { ok: true });
    });
    // a state written by someone else at the same path is noticed too (inode, size, mtime)
    const other = await newHome();
    await withStore(other, (s) => s.initialize(CHAIN, S3));
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, S1);
      await copyFile(chainFiles(other, CHAIN).state, files.state);
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

  test('state files are 0600, carry version, chain id, generation and checksum', async () => {
    const home = await newHome();
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    const files = chainFiles(home, CHAIN);
    for (const f of [files.state, files.hwm]) assert.equal((await stat(f)).mode & 0o777, 0o600);
    const stored = decodeStateFile(await readFile(files.state, 'utf8'));
    assert.equal(stored.chainId, CHAIN);
    assert.equal(stored.generation, 1n);
    assert.deepEqual(stored.state, S1);
    const doc = JSON.parse(await readFile(files.state, 'utf8'));
    assert.equal(doc.format, 1);
    assert.equal(doc.height, '10');
    assert.match(doc.checksum, /^[0-9a-f]{64}$/);
    assert.equal(decodeHwmFile(await readFile(files.hwm, 'utf8')).generation, 1n);
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
  test('a torn (truncated) state file is an error naming the file and the remedy', async () => {
    const home = await newHome();
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    const { state: file } = chainFiles(home, CHAIN);
    const text = await readFile(file, 'utf8');
    await writeFile(file, text.slice(0, text.length / 2));
    const err = await openError(home);
    assert.ok(err.message.includes(file));
    assert.match(err.message, /not valid JSON/);
    assert.match(err.message, /cometkms state import .* --force/);
  });

  test('an edited state file (bad checksum) is an error', async () => {
    const home = await newHome();
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    const { state: file } = chainFiles(home, CHAIN);
    await writeFile(file, (await readFile(file, 'utf8')).replace('"height": "10"', '"height": "9"'));
    assert.match((await openError(home)).message, /checksum mismatch/);
  });

  test("another chain's files are refused", async () => {
    const home = await newHome();
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    const a = chainFiles(home, CHAIN);
    const b = chainFiles(home, 'other-chain');
    await copyFile(a.state, b.state);
    await copyFile(a.hwm, b.hwm);
    assert.match((await openError(home, 'other-chain')).message, /belongs to chain "test-chain-1"/);
  });

  test('a restored backup of the state file (older than its high-water record) is an error', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    await copyFile(files.state, join(root, 'backup.json'));
    await withStore(home, async (s) => {
      await s.reserve(CHAIN, S1, S2);
      await s.reserve(CHAIN, S2, S3);
    });
    await copyFile(join(root, 'backup.json'), files.state);
    const err = await openError(home);
    assert.match(err.message, /older than expected/);
    assert.match(err.message, /generation 1, height\/round\/step 10\/0\/1/);
    assert.match(err.message, /generation 3, height\/round\/step 11\/0\/1/);
    // and load() without the chain in chainIds fails the same way: never a silent reset
    const s = await FileSignStateStore.open(home);
    try {
      await assert.rejects(s.load(CHAIN), /older than expected/);
      await assert.rejects(s.reserve(CHAIN, S3, { ...S3, step: 2 }), /older than expected/);
    } finally {
      await s.close();
    }
  });

  test('a state file replaced at the same generation is an error', async () => {
    const a = await newHome();
    const b = await newHome();
    await withStore(a, (s) => s.initialize(CHAIN, S1));
    await withStore(b, (s) => s.initialize(CHAIN, S3));
    await copyFile(chainFiles(b, CHAIN).state, chainFiles(a, CHAIN).state);
    assert.match((await openError(a)).message, /does not match its high-water record/);
  });

  test('a deleted state file with a high-water record left is an error, not the initial state', async () => {
    const home = await newHome();
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    await rm(chainFiles(home, CHAIN).state);
    assert.match((await openError(home)).message, /missing, but its high-water record/);
  });

  test('a missing high-water record beyond the first write is an error', async () => {
    const home = await newHome();
    await withStore(home, async (s) => {
      await s.initialize(CHAIN, S1);
      await s.reserve(CHAIN, S1, S2);
    });
    await rm(chainFiles(home, CHAIN).hwm);
    assert.match((await openError(home)).message, /\.hwm .*missing/);
  });

  test('a high-water record more than one write behind is an error', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    await copyFile(files.hwm, join(root, 'hwm-backup'));
    await withStore(home, async (s) => {
      await s.reserve(CHAIN, S1, S2);
      await s.reserve(CHAIN, S2, S3);
    });
    await copyFile(join(root, 'hwm-backup'), files.hwm);
    assert.match((await openError(home)).message, /is behind its state file/);
  });
});

describe('FileSignStateStore crash consistency', () => {
  // A write is: state file (generation g+1), then high-water record (g+1). A crash between them
  // is simulated by putting back the record as it was before the write.

  test('crash after the state file, before the record: the newer state is kept and the record repaired', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    const oldHwm = await readFile(files.hwm, 'utf8');
    await withStore(home, (s) => s.reserve(CHAIN, S1, S2));
    await writeFile(files.hwm, oldHwm);
    await withStore(home, async (s) => assert.deepEqual(await s.load(CHAIN), S2));
    assert.equal(decodeHwmFile(await readFile(files.hwm, 'utf8')).generation, 2n);
  });

  test('crash during the very first write (state file, no record yet) is recovered', async () => {
    const home = await newHome();
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    await rm(chainFiles(home, CHAIN).hwm);
    await withStore(home, async (s) => assert.deepEqual(await s.load(CHAIN), S1));
  });

  test('crash before the state file was renamed: the old pair is consistent', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    // a leftover temp file of the interrupted write is ignored
    await writeFile(join(home, 'state', `.${chainFileStem(CHAIN)}.json.tmp-1-abcd`), '{"height": "99"');
    await withStore(home, async (s) => assert.deepEqual(await s.load(CHAIN), S1));
    assert.equal(decodeStateFile(await readFile(files.state, 'utf8')).generation, 1n);
  });

  test('an interrupted write can never be read as a lower HRS than its record', async () => {
    // The opposite half-state (record ahead by one, state behind) is what a restored backup looks
    // like; it must be refused even though it is only one generation behind.
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, (s) => s.initialize(CHAIN, S1));
    const oldState = await readFile(files.state, 'utf8');
    await withStore(home, (s) => s.reserve(CHAIN, S1, S2));
    await writeFile(files.state, oldState);
    assert.match((await openError(home)).message, /older than expected/);
  });
  test('an interrupted forced write that lowered the HRS is refused, not half-applied', async () => {
    const home = await newHome();
    const files = chainFiles(home, CHAIN);
    await withStore(home, (s) => s.initialize(CHAIN, S3));
    const oldHwm = await readFile(files.hwm, 'utf8');
    const s = await FileSignStateStore.open(home);
    try {
      await s.forceWrite(CHAIN, S1);
    } finally {
      await s.close();
    }
    await writeFile(files.hwm, oldHwm);
    assert.match((await openError(home)).message, /interrupted forced import/);
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
    await writeFile(files.state, 'garbage');
    await openError(home);
    const s = await FileSignStateStore.open(home);
    try {
      await s.forceWrite(CHAIN, S2);
    } finally {
      await s.close();
    }
    await withStore(home, async (st) => assert.deepEqual(await st.load(CHAIN), S2));
    assert.equal(decodeStateFile(await readFile(files.state, 'utf8')).generation, 3n);
  });

  test('readChainState reads without the lock and applies the same checks', async () => {
    const home = await newHome();
    const s = await FileSignStateStore.open(home);
    try {
      await s.initialize(CHAIN, S1);
      assert.deepEqual(await readChainState(home, CHAIN), S1);
      await writeFile(chainFiles(home, CHAIN).state, 'garbage');
      await assert.rejects(readChainState(home, CHAIN), StateStoreError);
    } finally {
      await s.close();
    }
  });
});
