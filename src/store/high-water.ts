/**
 * A cluster node's durable high-water marks: per chain, the highest sign state (HRS) this node
 * has ever seen in etcd, kept in its own home (ARCHITECTURE §2 invariant 7).
 *
 * etcd is the cluster's single source of truth, so etcd losing data is exactly what no etcd
 * transaction can notice: a wiped store, a restore from an older snapshot, a wrong `etcd_prefix`
 * or a forced import of a lower state all look like a valid, lower (or missing) state. Each node
 * therefore remembers what it saw and refuses an etcd state below it, or a missing key once it
 * has seen one. Going lower on purpose is an explicit, per-node operator act
 * (`cometkms state reset-high-water`).
 *
 * Durability: the leader raises the mark durably after every reservation it commits and before
 * it signs (see EtcdSignStateStore), so no signature exists above a node's durable mark on disk.
 * Followers raise theirs from the replicated states they watch, in the background. A write
 * opens the file, copies the slot into the page cache (pwrite) and waits for the disk on the
 * thread pool (fdatasync): the writes of a batch of chains' reservations run in parallel and the
 * event loop never waits for a disk. (The synchronous open and pwrite take microseconds; one
 * thread-pool round trip per write instead of four through fs/promises measured 12-20 % less CPU
 * per signature on a follower at 100 chains, bench/many-chains.bench.ts.) The path is opened for
 * every write, so a file replaced behind the node's back is the one written. Writes of ONE chain
 * never overlap (each waits for the one before), so a torn write can only ever damage the slot
 * being written, as the format requires.
 *
 * File format, one file per chain (`<home>/state/<stem>.seen`): two fixed 512-byte slots, each a
 * checksummed JSON record with a sequence number, padded with spaces. A raise rewrites the slot
 * NOT holding the newest record (pwrite) and fdatasyncs, so a torn write can only damage the
 * record being written: the other slot still holds the previous mark. The file size never
 * changes after creation, so fdatasync need not flush metadata.
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  fdatasync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { compareHRS, type HRS } from '../cometbft/types.ts';
import { type Clock, systemClock } from '../ports/clock.ts';
import { StateStoreError } from './errors.ts';
import { chainStatePath, STATE_DIR } from './paths.ts';

const SLOT_BYTES = 512;
const KIND = 'cometkms/high-water';
const FORMAT = 1;
const INT64_MAX = (1n << 63n) - 1n;
const fdatasyncOnPool = promisify(fdatasync);

/** Path of the high-water file of `chainId` (same stem as the single-node state files). */
export function highWaterFile(home: string, chainId: string): string {
  return chainStatePath(home, chainId, '.seen');
}

interface Slot extends HRS {
  seq: bigint;
}

function body(chainId: string, slot: Slot): Record<string, unknown> {
  return {
    format: FORMAT,
    kind: KIND,
    chain_id: chainId,
    seq: slot.seq.toString(),
    height: slot.height.toString(),
    round: slot.round,
    step: slot.step,
  };
}

function checksum(fields: Record<string, unknown>): string {
  return createHash('sha256').update(JSON.stringify(fields)).digest('hex');
}

function encodeSlot(chainId: string, slot: Slot): Buffer {
  const fields = body(chainId, slot);
  const text = JSON.stringify({ ...fields, checksum: checksum(fields) });
  const bytes = Buffer.alloc(SLOT_BYTES, 0x20);
  const written = bytes.write(text, 'utf8');
  if (written !== Buffer.byteLength(text) || written >= SLOT_BYTES) {
    throw new Error(`high-water record of ${JSON.stringify(chainId)} does not fit in ${SLOT_BYTES} bytes`);
  }
  bytes[SLOT_BYTES - 1] = 0x0a;
  return bytes;
}

/** The slot's record, or undefined when it is empty, torn or damaged. */
function decodeSlot(chainId: string, raw: Buffer): Slot | undefined {
  try {
    const o = JSON.parse(raw.toString('utf8').trim()) as Record<string, unknown>;
    const decimal = (k: string): bigint => {
      const v = o[k];
      if (typeof v !== 'string' || !/^(0|[1-9][0-9]*)$/.test(v) || BigInt(v) > INT64_MAX) throw new Error(k);
      return BigInt(v);
    };
    const small = (k: string, max: number): number => {
      const v = o[k];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new Error(k);
      return v;
    };
    const slot: Slot = {
      seq: decimal('seq'),
      height: decimal('height'),
      round: small('round', 2 ** 31 - 1),
      step: small('step', 3),
    };
    if (o['kind'] !== KIND || o['format'] !== FORMAT || o['chain_id'] !== chainId) return undefined;
    if (o['checksum'] !== checksum(body(chainId, slot))) return undefined;
    return slot;
  } catch {
    return undefined;
  }
}

/**
 * Reads the mark of `chainId` in `home`: undefined when the node never saw a state of the chain
 * (no file). A file with no valid slot is an error: the node can no longer tell what it saw.
 */
export function readHighWater(home: string, chainId: string): HRS | undefined {
  const found = readSlots(highWaterFile(home, chainId), chainId);
  return found === undefined ? undefined : copyHrs(found.newest);
}

function readSlots(path: string, chainId: string): { newest: Slot; index: number } | undefined {
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const slots = [0, 1].map((i) => decodeSlot(chainId, raw.subarray(i * SLOT_BYTES, (i + 1) * SLOT_BYTES)));
  let best: { newest: Slot; index: number } | undefined;
  slots.forEach((s, index) => {
    if (s !== undefined && (best === undefined || s.seq > best.newest.seq)) best = { newest: s, index };
  });
  if (best === undefined) {
    throw new StateStoreError(
      `high-water file ${path} of chain ${JSON.stringify(chainId)} is damaged: this node cannot tell ` +
        'which sign state it has seen. Stop the node and run cometkms state reset-high-water once the ' +
        "chain's state in etcd is known to be right",
    );
  }
  return best;
}

/**
 * Writes `hrs` as the mark of `chainId`, whatever the current one (the operator's deliberate
 * reset, and the first write of a chain). Atomic: a temp file with both slots, fsync, rename,
 * fsync of the directory.
 */
export function writeHighWaterFile(home: string, chainId: string, hrs: HRS): void {
  const path = highWaterFile(home, chainId);
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    const first = encodeSlot(chainId, { ...hrs, seq: 1n });
    writeSync(fd, Buffer.concat([first, Buffer.alloc(SLOT_BYTES, 0x20)]));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  const dir = openSync(join(home, STATE_DIR), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/**
 * Where a node's marks are durable: the two-slot files of this module in production, memory that
 * survives simulated crashes in the deterministic simulator (sim/).
 */
export interface MarkStorage {
  /** the durable mark of `chainId`; undefined: never written. Throws when it is unreadable. */
  read(chainId: string): HRS | undefined;
  /**
   * makes `hrs` the durable mark of `chainId` before returning (or before its promise resolves);
   * throws (rejects) when the disk fails. Never called again for a chain before the previous
   * call for that chain returned (resolved).
   */
  write(chainId: string, hrs: HRS): void | Promise<void>;
}

/** The marks as files in `<home>/state/` (see the file comment for the format). */
export class FileMarkStorage implements MarkStorage {
  /** the slot holding the newest record of each chain written or read here */
  readonly #slots = new Map<string, { seq: bigint; index: number }>();

  constructor(readonly home: string) {}

  read(chainId: string): HRS | undefined {
    const found = readSlots(highWaterFile(this.home, chainId), chainId);
    if (found === undefined) return undefined;
    this.#slots.set(chainId, { seq: found.newest.seq, index: found.index });
    return copyHrs(found.newest);
  }

  async write(chainId: string, hrs: HRS): Promise<void> {
    const slot = this.#slots.get(chainId);
    if (slot === undefined) {
      // once per chain and node: the file with both slots, atomically
      writeHighWaterFile(this.home, chainId, hrs);
      this.#slots.set(chainId, { seq: 1n, index: 0 });
      return;
    }
    const seq = slot.seq + 1n;
    const index = 1 - slot.index;
    const path = highWaterFile(this.home, chainId);
    const fd = openSync(path, 'r+');
    try {
      const written = writeSync(fd, encodeSlot(chainId, { ...hrs, seq }), 0, SLOT_BYTES, index * SLOT_BYTES);
      if (written !== SLOT_BYTES) throw new Error(`${path}: short write (${written} of ${SLOT_BYTES} bytes)`);
      await fdatasyncOnPool(fd);
    } finally {
      closeSync(fd);
    }
    this.#slots.set(chainId, { seq, index });
  }
}

/** The marks of one node, for the chains it serves. */
export class HighWaterMarks {
  readonly #storage: MarkStorage;
  /** runs the background flush after the current turn (setImmediate in production) */
  readonly #defer: (fn: () => void) => void;
  /** the mark as known in memory: at or above the durable one */
  readonly #seen = new Map<string, HRS>();
  /** the mark known to be durable */
  readonly #durable = new Map<string, HRS>();
  /** chains whose in-memory mark is ahead of the durable one, written by the next background flush */
  readonly #dirty = new Set<string>();
  #flushQueued = false;
  /** per chain, the write in progress: the next write of that chain waits for it */
  readonly #writing = new Map<string, Promise<void>>();

  /**
   * `home`: the node's home (files), or a {@link MarkStorage}. `onError`: told when a background
   * write fails (the next raise retries it). `clock`: where the background flush is deferred to.
   */
  constructor(
    home: string | MarkStorage,
    private readonly onError: (chainId: string, err: unknown) => void = () => {},
    clock: Pick<Clock, 'defer'> = systemClock,
  ) {
    this.#storage = typeof home === 'string' ? new FileMarkStorage(home) : home;
    this.#defer = (fn) => clock.defer(fn);
  }

  /** The mark of `chainId`, read from storage the first time; undefined: never seen. */
  get(chainId: string): HRS | undefined {
    const known = this.#seen.get(chainId);
    if (known !== undefined) return known;
    const found = this.#storage.read(chainId);
    if (found === undefined) return undefined;
    this.#durable.set(chainId, found);
    this.#seen.set(chainId, found);
    return found;
  }

  /**
   * Raises the mark of `chainId` to `hrs` (a no-op when not above it) and resolves once it is
   * durable: one pwrite and one fdatasync, after the chain's write in progress, if any. Rejects
   * when the disk fails: the caller must not sign then. (Asynchronous, hence the name: it was a
   * synchronous `raise`, and a caller that does not await it has no durable mark.)
   */
  async raiseDurably(chainId: string, hrs: HRS): Promise<void> {
    const seen = this.get(chainId);
    if (seen === undefined || compareHRS(hrs, seen) > 0) this.#seen.set(chainId, copyHrs(hrs));
    await this.#persist(chainId);
  }

  /** Raises the mark in memory now and durably soon (a follower watching the replicated state). */
  observe(chainId: string, hrs: HRS): void {
    const seen = this.get(chainId);
    if (seen !== undefined && compareHRS(hrs, seen) <= 0) return;
    this.#seen.set(chainId, copyHrs(hrs));
    this.#dirty.add(chainId);
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    this.#defer(() => {
      this.#flushQueued = false;
      for (const id of [...this.#dirty]) this.#persist(id).catch((err: unknown) => this.onError(id, err));
    });
  }

  /**
   * Writes the in-memory mark of `chainId` unless storage already holds it, once the chain's
   * write in progress (if any) is over. The check for a write in progress and the start of this
   * one are in one synchronous step, so two writes of a chain never overlap.
   */
  async #persist(chainId: string): Promise<void> {
    for (let busy = this.#writing.get(chainId); busy !== undefined; busy = this.#writing.get(chainId)) {
      // Its failure is its own caller's to report; this write starts afresh below.
      await busy.catch(() => undefined);
    }
    const want = this.#seen.get(chainId);
    if (want === undefined) return;
    const durable = this.#durable.get(chainId);
    if (durable !== undefined && compareHRS(durable, want) >= 0) {
      this.#dirty.delete(chainId);
      return;
    }
    // A synchronous storage has written when write() returns; an asynchronous one when it resolves.
    const writing = (async () => await this.#storage.write(chainId, want))();
    this.#writing.set(chainId, writing);
    try {
      await writing;
    } finally {
      this.#writing.delete(chainId);
    }
    this.#durable.set(chainId, want);
    const seen = this.#seen.get(chainId);
    if (seen === undefined || compareHRS(want, seen) >= 0) this.#dirty.delete(chainId);
  }
}

function copyHrs(h: HRS): HRS {
  return { height: h.height, round: h.round, step: h.step };
}
