/**
 * The single-node sign-state store: per chain a write-ahead log and its seal, in `<home>/state/`.
 *
 *   <stem>.log   the log (state-log.ts): a preallocated segment of checksummed records, each the
 *                chain's whole state at one generation; the last complete record is the state
 *   <stem>.seal  the seal (seal.ts): names the newest record the store made sure of
 *
 * Write path. A reservation is one record appended with one pwrite and one fdatasync, durable
 * before `reserve` resolves (reserve before sign). The file never changes size after it was
 * created and zero-filled, so that fdatasync flushes data only. The seal is then rewritten
 * (pwrite, fdatasync) on the next turn of the event loop, while the HSM signs on the thread
 * pool, and `readyToReturn` makes sure it is durable before the signature may leave the
 * process. An ed25519 signature is kept in memory and written only at close (a later
 * reservation supersedes it); a secp256k1 one is appended at once (durable). Nothing else on the
 * reply path waits for a disk: compaction prepares its new segment (zero-filled, fsynced) in the
 * background and switches to it between requests.
 *
 * Crash recovery. Records are written one at a time, each made durable before the next, so after
 * a crash or power loss at any moment the log holds every acknowledged record followed by at most
 * one record that was being written: whole (written but not acknowledged: never signed, and safe
 * to take, like any reservation whose signature was lost), or cut anywhere, which its length and
 * CRC reveal. Reading stops at the first invalid record, so the state is the last complete one,
 * never a part of one and never anything older than the last acknowledged one. A log whose tail
 * holds such a leftover is replaced by a fresh segment at open. This assumes what every
 * write-ahead log assumes: a power loss leaves each disk sector either old or new.
 *
 * Why the seal: a copied-back older log. A log copied back from earlier (a restored backup, a
 * file copied from elsewhere) is a perfectly valid log of an older state, and a log alone cannot
 * tell it from one a crash cut short. The seal is what such a copy cannot fake, by two rules:
 *   1. A seal only ever names a record that is already durable in the log (it is written after
 *      that record's fdatasync returned). After any crash the seal is therefore at or below the
 *      log's last record, and a log that reads BELOW its seal did not come from a crash: it is an
 *      older copy (or damaged), and it is refused, never taken as a new baseline.
 *   2. No signature is returned before the seal names its reservation (or a later record)
 *      (`readyToReturn`). Every reservation whose signature left the process is therefore at or
 *      below the seal, and a copied-back log that lacks one reads below the seal: refused. A copy
 *      that goes unnoticed can only lack reservations whose signatures never left the process
 *      (the one being signed at a crash), and a reservation nobody got a signature for binds
 *      nothing anyone has seen.
 * The seal also names the record's CRC: the log must hold that very record (a file of another
 * history at a higher generation is refused). A seal may lag its log by at most one reservation
 * (one is in flight at a time: the next is appended only once the previous one's seal is
 * durable); a seal further behind was itself copied back, and is refused too. Copying back BOTH
 * files from one backup is the one thing nothing on that disk can detect (SECURITY.md, out of
 * scope). Compaction starts a new segment with a checkpoint of the last state, whose header
 * remembers the seal of the segment it replaces; the seal is then rewritten to name the
 * checkpoint (a crash in between leaves exactly that remembered seal, which is accepted).
 *
 * A missing state is not an empty one (ARCHITECTURE §2 invariant 7): `load` returns undefined for
 * a chain without files; only `initialize` (`state init|import`) and `forceWrite` (`state import
 * --force`) create a log. A seal without its log (deleted or lost) is an error; a log without its
 * seal only while it holds just the state it was created with (a crash while creating the pair).
 *
 * Files changed behind the running store's back (deleted, replaced, edited, written by another
 * process that got around the home lock) are refused before the next write and stop that chain
 * until a restart verifies the files again: before every write the store compares both files'
 * inode, size and modification time with what it last saw, and checks that the bytes where the
 * next record goes are still zero (another writer appending there is noticed even within one
 * timestamp tick).
 *
 * Migration: a 0.1 home (`<stem>.json` + `<stem>.hwm`, legacy-files.ts) is moved into a log at the
 * chain's first open under the home lock (same generation, same state), and the 0.1 files are
 * removed; `readChainState` reads either layout.
 */
import { randomBytes } from 'node:crypto';
import {
  type BigIntStats,
  closeSync,
  fdatasyncSync,
  fstatSync,
  fsyncSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { bytesEqual } from '../cometbft/bytes.ts';
import { compareHRS } from '../cometbft/types.ts';
import { fsyncDir, readBytesIfExists, tempPath, writeAll, writeFileDurable } from './durable.ts';
import { StateMissingError, StateStoreError, stateRemedy } from './errors.ts';
import {
  legacyChainFiles,
  legacyGeneration,
  readLegacyRaw,
  stateRecoveryRemedy,
  validateLegacy,
} from './legacy-files.ts';
import { acquireHomeLock, type HomeLock } from './lock.ts';
import { chainFileStem, chainStatePath, STATE_DIR } from './paths.ts';
import {
  chainTag,
  encodeSeal,
  newSealFile,
  type ReadSeal,
  readSeal,
  SEAL_WRITE_BYTES,
  SLOT_BYTES,
} from './seal.ts';
import { formatHrs } from './state-codec.ts';
import {
  encodeHeader,
  encodeRecord,
  HEADER_BYTES,
  type LogRecord,
  RecordKind,
  recordLength,
  SALT_BYTES,
  SALT_OFFSET,
  type ScannedSegment,
  type SealRef,
  saltCrc,
  scanSegment,
} from './state-log.ts';
import {
  copySignState,
  type Reservation,
  type ReserveResult,
  type SignState,
  type SignStateStore,
} from './types.ts';

export { STATE_DIR };

/** Default size of a log segment (some 900 records of a vote without extension). */
export const DEFAULT_SEGMENT_BYTES = 256 * 1024;
/** A segment holds at least this many records of the largest size seen before it is compacted. */
const RECORDS_PER_SEGMENT = 16;
/** Bytes checked to be still zero where the next record goes. */
const TAIL_PROBE_BYTES = 8;

/** Paths of a chain's log and seal. */
export function chainFiles(home: string, chainId: string): { log: string; seal: string } {
  return { log: chainStatePath(home, chainId, '.log'), seal: chainStatePath(home, chainId, '.seal') };
}

function storeError(file: string, chainId: string, what: string): StateStoreError {
  return new StateStoreError(
    `sign state ${file} (chain ${JSON.stringify(chainId)}): ${what}. ${stateRecoveryRemedy(chainId)}`,
  );
}

function describe(generation: bigint, hrs: { height: bigint; round: number; step: number }): string {
  return `generation ${generation}, height/round/step ${formatHrs(hrs)}`;
}

/** A chain's log and seal as read, checked against each other. */
interface Verified {
  segment: ScannedSegment;
  /** undefined: no seal file (allowed only for a freshly created log) */
  seal: ReadSeal | undefined;
}

/**
 * Checks a chain's log against its seal by the rules of the module comment. `strict` (the store,
 * which owns the files) also refuses a seal more than one reservation behind; a reader next to a
 * running node skips that check, since the node may append many records between its two reads.
 * Returns undefined when the chain has neither file.
 */
function verify(
  paths: { log: string; seal: string },
  chainId: string,
  log: Buffer | undefined,
  sealFile: Buffer | undefined,
  strict: boolean,
): Verified | undefined {
  if (log === undefined) {
    if (sealFile === undefined) return undefined;
    let what = 'a seal without its log';
    try {
      const { seal } = readSeal(sealFile, chainTag(chainId));
      what = `its seal ${paths.seal} says ${describe(seal.generation, seal)} was written`;
    } catch {
      // damaged seal: the log is missing either way
    }
    throw storeError(paths.log, chainId, `missing, but ${what} (deleted or lost log)`);
  }
  let segment: ScannedSegment;
  try {
    segment = scanSegment(log);
  } catch (err) {
    throw storeError(paths.log, chainId, `unreadable: ${(err as Error).message}`);
  }
  if (segment.header.chainId !== chainId) {
    throw storeError(paths.log, chainId, `belongs to chain ${JSON.stringify(segment.header.chainId)}`);
  }
  const records = segment.records;
  const first = records[0] as LogRecord;
  const last = records.at(-1) as LogRecord;
  if (sealFile === undefined) {
    const fresh =
      records.length === 1 &&
      (first.kind === RecordKind.Created || first.kind === RecordKind.Migrated) &&
      segment.header.previousSeal === undefined;
    if (fresh) return { segment, seal: undefined };
    throw storeError(
      paths.seal,
      chainId,
      `missing, but the log is at ${describe(last.generation, last.state)} (deleted or lost seal)`,
    );
  }
  let read: ReadSeal;
  try {
    read = readSeal(sealFile, chainTag(chainId));
  } catch (err) {
    throw storeError(paths.seal, chainId, `unreadable: ${(err as Error).message}`);
  }
  const seal = read.seal;
  if (last.generation < seal.generation) {
    throw storeError(
      paths.log,
      chainId,
      `is older than its seal: the log is at ${describe(last.generation, last.state)} but the seal ` +
        `${paths.seal} says ${describe(seal.generation, seal)} was written (restored backup or copied file?)`,
    );
  }
  // Where the seal anchors in this log: the seal the segment replaced, or one of its records.
  const previous = segment.header.previousSeal;
  let after: number;
  if (previous !== undefined && previous.generation === seal.generation && previous.crc === seal.crc) {
    after = 0;
  } else {
    const index = records.findIndex((r) => r.generation === seal.generation);
    const named = records[index];
    if (named === undefined || named.crc !== seal.crc || compareHRS(named.state, seal) !== 0) {
      throw storeError(
        paths.log,
        chainId,
        `does not hold the record its seal ${paths.seal} names (${describe(seal.generation, seal)}): ` +
          'a replaced or edited file?',
      );
    }
    after = index + 1;
  }
  if (strict) {
    const unsealed = records.slice(after).filter((r) => r.kind === RecordKind.Reservation).length;
    if (unsealed > 1) {
      throw storeError(
        paths.seal,
        chainId,
        `is behind its log by ${unsealed} reservations, more than a crash can leave: seal at ` +
          `${describe(seal.generation, seal)}, log at ${describe(last.generation, last.state)} (restored or replaced seal?)`,
      );
    }
  }
  return { segment, seal: read };
}

/** What identifies one version of a file on disk: a replaced or edited file changes it. */
interface FileStamp {
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
}

function stampOf(st: BigIntStats): FileStamp {
  return { ino: st.ino, size: st.size, mtimeNs: st.mtimeNs };
}

/** The stamp of `path`, or undefined when it does not exist. */
function statStamp(path: string): FileStamp | undefined {
  try {
    return stampOf(statSync(path, { bigint: true }));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function sameStamp(a: FileStamp | undefined, b: FileStamp): boolean {
  return a !== undefined && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs;
}

/** The newest record of a chain's log, as the store tracks it. */
interface LastRecord {
  kind: RecordKind;
  generation: bigint;
  crc: number;
  state: SignState;
}

/** One chain's open log and seal, and everything the store knows of them. */
interface ChainLog {
  chainId: string;
  paths: { log: string; seal: string };
  tag: Buffer;
  logFd: number;
  sealFd: number;
  /** the segment: its size, salt (and its CRC), and where the next record goes */
  size: number;
  salt: Buffer;
  saltCrc: number;
  end: number;
  last: LastRecord;
  /** generation of the newest reservation: it must be sealed before its signature is returned */
  mustSeal: bigint;
  /** the seal on disk (durable) */
  seal: { seq: bigint; slot: 0 | 1; generation: bigint; crc: number };
  /** the seal write scheduled for the next turn of the event loop, if any */
  sealSoon: NodeJS.Immediate | undefined;
  /** a signature recorded in memory only (ed25519), over `last.state`'s bytes */
  signature: Uint8Array | undefined;
  logStamp: FileStamp;
  sealStamp: FileStamp;
  /** bytes of the largest record written so far: segments are sized to hold many of them */
  largestRecord: number;
  /** a background compaction is scheduled or running */
  compacting: boolean;
}

/** Options of {@link FileSignStateStore.open}. */
export interface FileStoreOptions {
  /** chains whose state must exist and verify: a missing one fails the open */
  chainIds?: string[];
  /** the config's path, for the messages that tell how to create a state */
  configPath?: string;
  /** size of a new log segment (default 256 KiB; tests use small ones to compact often) */
  segmentBytes?: number;
}

/** The file-backed SignStateStore (single-node mode). */
export class FileSignStateStore implements SignStateStore {
  readonly #dir: string;
  readonly #segmentBytes: number;
  /** chains whose log is open; this process is the only writer (home lock) */
  readonly #chains = new Map<string, ChainLog>();
  /** chains whose files changed behind this store's back: refused until a restart re-verifies */
  readonly #tampered = new Map<string, string>();
  /** tail of the per-chain queue: calls of one chain never interleave */
  readonly #tails = new Map<string, Promise<void>>();
  /** background work (compactions) that close() waits for */
  readonly #background = new Set<Promise<void>>();
  /** {@link close} once it has begun: from then on no call may join the queues */
  #closing: Promise<void> | undefined;
  #closed = false;
  /** reused encode buffers (writes are synchronous between awaits, so one of each suffices) */
  #record = Buffer.alloc(1024);
  readonly #sealBuffer = Buffer.alloc(SEAL_WRITE_BYTES);
  readonly #probe = Buffer.alloc(SALT_BYTES);

  private constructor(
    readonly home: string,
    private readonly lock: HomeLock,
    segmentBytes: number,
  ) {
    this.#dir = join(home, STATE_DIR);
    this.#segmentBytes = segmentBytes;
  }

  /**
   * Locks `home` and verifies the state of every chain in `chainIds` (so a bad or missing state
   * stops the node at startup, not at the first vote), migrating 0.1 files. Throws
   * StateMissingError for a chain without state, StateStoreError on any inconsistency, or an
   * Error if another process holds the home.
   */
  static async open(home: string, opts: FileStoreOptions = {}): Promise<FileSignStateStore> {
    const dir = join(home, STATE_DIR);
    const isDir = await stat(dir).then(
      (st) => st.isDirectory(),
      () => false,
    );
    if (!isDir) {
      throw new StateStoreError(
        `state directory ${dir} does not exist: run \`cometkms init --home ${home}\` first`,
      );
    }
    const segmentBytes = Math.max(opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES, HEADER_BYTES + 1024);
    const lock = await acquireHomeLock(home);
    const store = new FileSignStateStore(home, lock, segmentBytes);
    try {
      store.#removeLeftovers();
      for (const chainId of opts.chainIds ?? []) {
        if ((await store.load(chainId)) === undefined) {
          throw new StateMissingError(
            `chain ${JSON.stringify(chainId)} has no sign state in ${dir}. A missing state is never ` +
              `read as "nothing signed yet": ${stateRemedy(chainId, opts.configPath)}`,
          );
        }
      }
    } catch (err) {
      await store.close();
      throw err;
    }
    return store;
  }

  async load(chainId: string): Promise<SignState | undefined> {
    return this.#exclusive(chainId, async () => {
      const chain = await this.#current(chainId);
      return chain === undefined ? undefined : stateOf(chain);
    });
  }

  async reserve(chainId: string, expected: SignState, next: SignState): Promise<ReserveResult> {
    return this.#exclusive(chainId, async () => {
      const chain = await this.#current(chainId);
      if (chain === undefined) throw this.#missing(chainId);
      if (!holds(chain, expected)) return { ok: false, current: stateOf(chain) };
      // At most one reservation is ever unsealed (the module comment's rule 2 and its lag bound).
      this.#sealNow(chain);
      await this.#append(chain, RecordKind.Reservation, next);
      this.#sealSoon(chain);
      return { ok: true };
    });
  }

  /**
   * Records `signature` for `reserved`. Not durable (ed25519): kept in memory; the log holds the
   * reservation of exactly these sign bytes, so after a crash that loses the signature the guard
   * re-signs the same reserved bytes (the same signature). Durable (secp256k1): appended now.
   */
  async recordSignature(
    chainId: string,
    reserved: Reservation,
    signature: Uint8Array,
    opts: { durable: boolean },
  ): Promise<void> {
    await this.#exclusive(chainId, async () => {
      const chain = await this.#current(chainId);
      if (chain === undefined) throw this.#missing(chainId);
      const state = chain.last.state;
      if (compareHRS(state, reserved) !== 0 || !bytesEqual(state.signBytes, reserved.signBytes)) return;
      if (bytesEqual(chain.signature ?? state.signature, signature)) return;
      if (opts.durable) await this.#append(chain, RecordKind.Signature, { ...state, signature });
      else chain.signature = signature.slice();
    });
  }

  /**
   * Resolves once the seal names the chain's newest reservation (module comment, rule 2): at once
   * when the seal written after the reservation (while the HSM signed) is durable, else after
   * writing it now. Throws when the seal cannot be written.
   */
  async readyToReturn(chainId: string): Promise<void> {
    const chain = this.#chains.get(chainId);
    if (chain !== undefined && chain.seal.generation >= chain.mustSeal) return;
    await this.#exclusive(chainId, async () => {
      const current = await this.#current(chainId);
      if (current === undefined) throw this.#missing(chainId);
      this.#sealNow(current);
    });
  }

  /**
   * Creates the state of a chain that has none (`cometkms state init`, or `state import` of a
   * chain without state). Refuses when any of the chain's files exists (0.1 ones included),
   * whatever it holds: replacing a state is `forceWrite`'s job, behind the operator's --force.
   */
  async initialize(chainId: string, state: SignState): Promise<void> {
    await this.#exclusive(chainId, async () => {
      this.#assertOpen();
      const paths = chainFiles(this.home, chainId);
      const legacy = legacyChainFiles(this.home, chainId);
      const existing = [paths.log, paths.seal, legacy.state, legacy.hwm].find(
        (p) => statStamp(p) !== undefined,
      );
      if (existing !== undefined) {
        throw new StateStoreError(
          `chain ${JSON.stringify(chainId)} already has sign state (${existing}); nothing was created. ` +
            'Use cometkms state show to read it, or state import to move it forward',
        );
      }
      this.#createLog(chainId, RecordKind.Created, 1n, state);
      await this.#openChain(chainId);
    });
  }

  /**
   * Overwrites a chain's state whatever it is now, even if its files are unreadable or
   * inconsistent. This exists only for `cometkms state import --force`: the operator's way out
   * after the store refused a state (restored backup, damaged file) and they have established
   * the true last signed state elsewhere. The new generation is above every readable one, so the
   * new log and seal are consistent. Nothing in the signing path may call this.
   */
  async forceWrite(chainId: string, state: SignState): Promise<void> {
    await this.#exclusive(chainId, async () => {
      this.#assertOpen();
      await this.#drop(chainId);
      const paths = chainFiles(this.home, chainId);
      let generation = legacyGeneration(await readLegacyRaw(this.home, chainId));
      const log = readBytesIfExists(paths.log);
      if (log !== undefined) {
        try {
          const last = scanSegment(log).records.at(-1);
          if (last !== undefined && last.generation > generation) generation = last.generation;
        } catch {
          // unreadable: it is being replaced, its generation does not matter
        }
      }
      const sealFile = readBytesIfExists(paths.seal);
      if (sealFile !== undefined) {
        try {
          const { seal } = readSeal(sealFile, chainTag(chainId));
          if (seal.generation > generation) generation = seal.generation;
        } catch {
          // likewise
        }
      }
      this.#tampered.delete(chainId);
      this.#createLog(chainId, RecordKind.Created, generation + 1n, state);
      await this.#openChain(chainId);
    });
  }

  /**
   * Lets the calls already queued finish, writes the signatures still only in memory and seals
   * every log, then releases the home lock. A call made once closing has begun is refused at
   * once: it would run beside the writes below, and could resolve (a reservation reported
   * durable) after the lock is gone and another process may own the home.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    // Nothing joins a queue any more, so these tails are the last ones; compactions that have
    // not switched yet cannot join either and clean up after themselves.
    await Promise.all([...this.#tails.values()]);
    await Promise.all([...this.#background]);
    try {
      for (const chain of this.#chains.values()) {
        try {
          if (!this.#tampered.has(chain.chainId)) {
            if (chain.signature !== undefined) {
              await this.#append(chain, RecordKind.Signature, {
                ...chain.last.state,
                signature: chain.signature,
              });
            }
            this.#cancelSeal(chain);
            if (chain.seal.generation < chain.last.generation) this.#writeSealSync(chain);
          }
        } finally {
          await this.#closeFiles(chain);
        }
      }
      this.#chains.clear();
    } finally {
      this.#closed = true;
      await this.lock.release();
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new Error('sign-state store is closed');
  }

  #missing(chainId: string): StateMissingError {
    return new StateMissingError(
      `chain ${JSON.stringify(chainId)} has no sign state in ${this.#dir}: ${stateRemedy(chainId)}`,
    );
  }

  /** Temp files of interrupted creations and compactions (this process holds the home). */
  #removeLeftovers(): void {
    for (const name of readdirSync(this.#dir)) {
      if (name.startsWith('.') && /\.(log|seal)\.tmp-\d+-[0-9a-f]+$/.test(name)) {
        rmSync(join(this.#dir, name), { force: true });
      }
    }
  }

  /** The open log of a chain (undefined: it has no state), opened and verified the first time. */
  async #current(chainId: string): Promise<ChainLog | undefined> {
    this.#assertOpen();
    const tampered = this.#tampered.get(chainId);
    if (tampered !== undefined) throw new StateStoreError(tampered);
    return this.#chains.get(chainId) ?? (await this.#openChain(chainId));
  }

  /**
   * Opens a chain's log and seal, verifies them (module comment), migrates a 0.1 home first,
   * replaces a segment with a leftover tail, and brings the seal up to the last record.
   */
  async #openChain(chainId: string): Promise<ChainLog | undefined> {
    const paths = chainFiles(this.home, chainId);
    const legacyRaw = await readLegacyRaw(this.home, chainId);
    const hasLegacy = legacyRaw.state !== undefined || legacyRaw.hwm !== undefined;
    let logFd = openIfExists(paths.log);
    if (logFd === undefined && statStamp(paths.seal) === undefined) {
      if (!hasLegacy) return undefined;
      const stored = validateLegacy(this.home, chainId, legacyRaw);
      if (stored === undefined) return undefined;
      this.#createLog(chainId, RecordKind.Migrated, stored.generation, stored.state);
      logFd = openIfExists(paths.log);
    }
    let sealFd: number | undefined;
    try {
      sealFd = openIfExists(paths.seal);
      const log = logFd === undefined ? undefined : readFileSync(logFd);
      const sealFile = sealFd === undefined ? undefined : readFileSync(sealFd);
      const verified = verify(paths, chainId, log, sealFile, true);
      if (verified === undefined || logFd === undefined) return undefined;
      const { segment } = verified;
      const last = segment.records.at(-1) as LogRecord;
      if (hasLegacy) this.#removeLegacy(chainId, legacyRaw, last.generation);
      if (sealFd === undefined) {
        writeFileDurable(
          paths.seal,
          newSealFile(chainTag(chainId), {
            ...hrsOf(last.state),
            generation: last.generation,
            crc: last.crc,
          }),
        );
        sealFd = openSync(paths.seal, 'r+');
      }
      const sealNow = verified.seal?.seal;
      const chain: ChainLog = {
        chainId,
        paths,
        tag: chainTag(chainId),
        logFd,
        sealFd,
        size: (log as Buffer).length,
        salt: segment.header.salt,
        saltCrc: saltCrc(segment.header.salt),
        end: segment.end,
        last: { kind: last.kind, generation: last.generation, crc: last.crc, state: last.state },
        mustSeal: 0n,
        seal:
          sealNow === undefined || verified.seal === undefined
            ? { seq: 1n, slot: 0, generation: last.generation, crc: last.crc }
            : {
                seq: sealNow.seq,
                slot: verified.seal.slot,
                generation: sealNow.generation,
                crc: sealNow.crc,
              },
        sealSoon: undefined,
        signature: undefined,
        logStamp: stampOf(fstatSync(logFd, { bigint: true })),
        sealStamp: stampOf(fstatSync(sealFd, { bigint: true })),
        largestRecord: Math.max(...segment.records.map((r) => r.length)),
        compacting: false,
      };
      this.#chains.set(chainId, chain);
      logFd = undefined;
      sealFd = undefined;
      // A leftover of an interrupted write after the last record: start a clean segment, so no
      // stale byte can ever sit behind a new record.
      if (!segment.cleanTail)
        await this.#switchSegment(chain, this.#createSpareSync(chain, chain.largestRecord));
      if (chain.seal.generation < chain.last.generation || chain.seal.crc !== chain.last.crc) {
        this.#writeSealSync(chain);
      }
      return chain;
    } finally {
      if (logFd !== undefined) closeSync(logFd);
      if (sealFd !== undefined) closeSync(sealFd);
    }
  }

  /**
   * Removes a chain's 0.1 files once its log holds at least their generation (the migration's
   * last step; a crash before it leaves both layouts, and the log wins). 0.1 files ahead of the
   * log are not a leftover of a migration: refused.
   */
  #removeLegacy(chainId: string, raw: { state?: string; hwm?: string }, logGeneration: bigint): void {
    const legacy = legacyChainFiles(this.home, chainId);
    const generation = legacyGeneration(raw);
    if (generation > logGeneration) {
      throw storeError(
        legacy.state,
        chainId,
        `is at generation ${generation}, ahead of the chain's log at generation ${logGeneration} (0.1 files copied in after the migration?)`,
      );
    }
    rmSync(legacy.state, { force: true });
    rmSync(legacy.hwm, { force: true });
    fsyncDir(this.#dir);
  }

  /**
   * Creates a chain's log (one record of `kind` at `generation`) and its seal, replacing any: the
   * log first, then the seal, each made durable with its directory entry before the next, so a
   * seal never exists without its log (a log without a seal and with only this record is what a
   * crash in between leaves, and is accepted). Removes the chain's 0.1 files afterwards.
   */
  #createLog(chainId: string, kind: RecordKind, generation: bigint, state: SignState): void {
    const paths = chainFiles(this.home, chainId);
    const salt = randomBytes(16);
    const length = recordLength(state);
    const size = this.#segmentSize(length);
    const file = Buffer.alloc(size);
    encodeHeader({ chainId, salt, previousSeal: undefined }).copy(file, 0);
    const crc = encodeRecord(file.subarray(HEADER_BYTES), saltCrc(salt), kind, generation, state);
    writeFileDurable(paths.log, file);
    writeFileDurable(paths.seal, newSealFile(chainTag(chainId), { ...hrsOf(state), generation, crc }));
    const legacy = legacyChainFiles(this.home, chainId);
    if (statStamp(legacy.state) !== undefined || statStamp(legacy.hwm) !== undefined) {
      rmSync(legacy.state, { force: true });
      rmSync(legacy.hwm, { force: true });
      fsyncDir(this.#dir);
    }
  }

  /** Closes a chain's files and forgets it: its next call opens and verifies them again. */
  async #drop(chainId: string): Promise<void> {
    const chain = this.#chains.get(chainId);
    if (chain === undefined) return;
    this.#chains.delete(chainId);
    await this.#closeFiles(chain);
  }

  async #closeFiles(chain: ChainLog): Promise<void> {
    this.#cancelSeal(chain);
    closeSync(chain.logFd);
    closeSync(chain.sealFd);
  }

  /**
   * Appends one record and makes it durable (pwrite + fdatasync), after checking that neither
   * file changed behind this store's back. A segment without room is first replaced by a new one
   * (normally compaction has done that in the background). A failed write leaves the disk
   * unknown: the chain is closed and its next call verifies the files from scratch.
   */
  async #append(chain: ChainLog, kind: RecordKind, state: SignState): Promise<void> {
    // The seal is checked before its own writes: a replaced seal stops the chain there, before
    // any signature over this record could be returned.
    this.#assertUntouched(chain, 'log');
    const length = recordLength(state);
    if (chain.end + length > chain.size)
      await this.#switchSegment(chain, this.#createSpareSync(chain, length));
    if (length > this.#record.length) this.#record = Buffer.alloc(Math.max(length, 2 * this.#record.length));
    const generation = chain.last.generation + 1n;
    const crc = encodeRecord(this.#record, chain.saltCrc, kind, generation, state);
    this.#assertTailFree(chain);
    try {
      writeAll(chain.logFd, this.#record, chain.end, length);
      fdatasyncSync(chain.logFd);
      chain.logStamp = stampOf(fstatSync(chain.logFd, { bigint: true }));
    } catch (err) {
      await this.#drop(chain.chainId);
      throw err;
    }
    chain.end += length;
    chain.last = { kind, generation, crc, state: copySignState(state) };
    chain.signature = undefined;
    if (kind === RecordKind.Reservation) chain.mustSeal = generation;
    if (length > chain.largestRecord) chain.largestRecord = length;
    this.#compactSoon(chain);
  }

  /**
   * Seals the reservation just appended on the next turn of the event loop: by then the guard has
   * handed the reservation to the HSM, whose signature runs on the thread pool meanwhile, so the
   * seal's pwrite and fdatasync cost the reply nothing while the HSM is the slower of the two.
   * A failure is left for readyToReturn (or the next call of the chain), which writes it again
   * and reports it.
   */
  #sealSoon(chain: ChainLog): void {
    chain.sealSoon ??= setImmediate(() => {
      chain.sealSoon = undefined;
      if (this.#chains.get(chain.chainId) !== chain) return;
      try {
        this.#sealNow(chain);
      } catch {
        // readyToReturn tries again and reports it
      }
    });
  }

  #cancelSeal(chain: ChainLog): void {
    if (chain.sealSoon === undefined) return;
    clearImmediate(chain.sealSoon);
    chain.sealSoon = undefined;
  }

  /** Makes the seal name the newest reservation now, if it does not (synchronous I/O; throws). */
  #sealNow(chain: ChainLog): void {
    this.#cancelSeal(chain);
    if (chain.seal.generation < chain.mustSeal) this.#writeSealSync(chain);
  }

  /** Writes the seal of the chain's last record and waits until it is durable (synchronous I/O). */
  #writeSealSync(chain: ChainLog): void {
    const next = {
      seq: chain.seal.seq + 1n,
      slot: (1 - chain.seal.slot) as 0 | 1,
      generation: chain.last.generation,
      crc: chain.last.crc,
    };
    this.#writeSealSlot(chain, next);
    fdatasyncSync(chain.sealFd);
    chain.seal = next;
  }

  #writeSealSlot(chain: ChainLog, next: { seq: bigint; slot: 0 | 1; generation: bigint; crc: number }): void {
    this.#assertUntouched(chain, 'seal');
    encodeSeal(this.#sealBuffer, chain.tag, { ...next, ...hrsOf(chain.last.state) });
    writeAll(chain.sealFd, this.#sealBuffer, next.slot * SLOT_BYTES);
    chain.sealStamp = stampOf(fstatSync(chain.sealFd, { bigint: true }));
  }

  /**
   * Refuses (and remembers the refusal) if a file of the chain changed since this store last read
   * or wrote it: deleted, replaced by a copy or a restore, edited, or written by a second process
   * that got around the home lock. Overwriting it would hide that; reading it again here could
   * take a state this process never checked. A restart re-verifies the files from scratch.
   */
  #assertUntouched(chain: ChainLog, files: 'both' | 'log' | 'seal' = 'both'): void {
    const log = files === 'seal' || sameStamp(statStamp(chain.paths.log), chain.logStamp);
    const seal = files === 'log' || sameStamp(statStamp(chain.paths.seal), chain.sealStamp);
    if (log && seal) return;
    this.#tamper(chain, [log ? [] : [chain.paths.log], seal ? [] : [chain.paths.seal]].flat().join(' and '));
  }

  /**
   * The log still has this segment's salt (not another log copied over it within one timestamp
   * tick), and the bytes where the next record goes are still zero (nobody else appended there).
   */
  #assertTailFree(chain: ChainLog): void {
    const probe = this.#probe;
    let ok =
      readSync(chain.logFd, probe, 0, SALT_BYTES, SALT_OFFSET) === SALT_BYTES && probe.equals(chain.salt);
    const n = Math.min(TAIL_PROBE_BYTES, chain.size - chain.end);
    if (ok && n > 0) {
      ok = readSync(chain.logFd, probe, 0, n, chain.end) === n;
      for (let i = 0; ok && i < n; i++) ok = probe[i] === 0;
    }
    if (!ok) this.#tamper(chain, chain.paths.log);
  }

  #tamper(chain: ChainLog, what: string): never {
    const reason =
      `sign state of chain ${JSON.stringify(chain.chainId)}: ${what} changed behind this process ` +
      '(deleted, replaced or written by someone else). Signing for this chain is stopped: stop every ' +
      'process using this home, find out what happened, and restart (the files are verified again at start)';
    this.#tampered.set(chain.chainId, reason);
    this.#chains.delete(chain.chainId);
    void this.#closeFiles(chain);
    throw new StateStoreError(reason);
  }

  /** Size of a new segment that holds records of `largest` bytes many times over. */
  #segmentSize(largest: number): number {
    const wanted = HEADER_BYTES + RECORDS_PER_SEGMENT * largest;
    return Math.max(this.#segmentBytes, Math.ceil(wanted / 4096) * 4096);
  }

  /**
   * Schedules a compaction once the segment runs low on room: a new segment is prepared off the
   * queue (created, zero-filled, fsynced on the thread pool) and switched to between requests.
   */
  #compactSoon(chain: ChainLog): void {
    if (chain.compacting || this.#closing !== undefined) return;
    const free = chain.size - chain.end;
    if (free >= Math.max(chain.size / 4, 2 * chain.largestRecord)) return;
    chain.compacting = true;
    const task = this.#compact(chain).finally(() => {
      chain.compacting = false;
      this.#background.delete(task);
    });
    this.#background.add(task);
  }

  async #compact(chain: ChainLog): Promise<void> {
    let spare: Spare | undefined;
    try {
      spare = await createSpare(chain.paths.log, this.#segmentSize(chain.largestRecord));
      const ready = spare;
      await this.#exclusive(chain.chainId, async () => {
        // The chain may have been closed, dropped or reopened meanwhile: then this spare is stale.
        if (this.#chains.get(chain.chainId) !== chain || this.#tampered.has(chain.chainId)) return;
        spare = undefined;
        await this.#switchSegment(chain, ready);
      });
    } catch {
      // The current segment stays; the next append schedules another try, and one that finds no
      // room at all switches synchronously (and reports a failure to its caller).
    } finally {
      if (spare !== undefined) discardSpare(spare);
    }
  }

  /** A new zero-filled segment file made synchronously (a record that does not fit, a leftover tail). */
  #createSpareSync(chain: ChainLog, length: number): Spare {
    const size = this.#segmentSize(Math.max(length, chain.largestRecord));
    const path = tempPath(chain.paths.log);
    const fd = openSync(path, 'wx+', 0o600);
    try {
      writeAll(fd, Buffer.alloc(size), 0);
      fsyncSync(fd);
    } catch (err) {
      closeSync(fd);
      rmSync(path, { force: true });
      throw err;
    }
    return { path, fd, size };
  }

  /**
   * Makes `spare` the chain's log: a new header remembering the current seal, a checkpoint of the
   * last state (same generation), fdatasync, rename over the log, fsync of the directory, then a
   * seal naming the checkpoint (see the module comment). Takes ownership of `spare`.
   */
  async #switchSegment(chain: ChainLog, spare: Spare): Promise<void> {
    let owned: Spare | undefined = spare;
    try {
      this.#sealNow(chain);
      this.#assertUntouched(chain);
      const salt = randomBytes(16);
      const previousSeal: SealRef = { generation: chain.seal.generation, crc: chain.seal.crc };
      writeAll(spare.fd, encodeHeader({ chainId: chain.chainId, salt, previousSeal }), 0);
      const state = chain.last.state;
      const length = recordLength(state);
      if (length > this.#record.length)
        this.#record = Buffer.alloc(Math.max(length, 2 * this.#record.length));
      const seed = saltCrc(salt);
      const crc = encodeRecord(this.#record, seed, RecordKind.Checkpoint, chain.last.generation, state);
      writeAll(spare.fd, this.#record, HEADER_BYTES, length);
      fdatasyncSync(spare.fd);
      renameSync(spare.path, chain.paths.log);
      owned = undefined;
      const oldFd = chain.logFd;
      chain.logFd = spare.fd;
      closeSync(oldFd);
      fsyncDir(this.#dir);
      chain.size = spare.size;
      chain.salt = salt;
      chain.saltCrc = seed;
      chain.end = HEADER_BYTES + length;
      chain.last = { ...chain.last, kind: RecordKind.Checkpoint, crc };
      chain.logStamp = stampOf(fstatSync(chain.logFd, { bigint: true }));
      this.#writeSealSync(chain);
    } catch (err) {
      if (owned !== undefined) discardSpare(owned);
      else await this.#drop(chain.chainId);
      throw err;
    }
  }

  /** Runs `fn` after every earlier call for the same chain has finished (writes never interleave). */
  async #exclusive<T>(chainId: string, fn: () => Promise<T>): Promise<T> {
    if (this.#closing !== undefined) throw new Error('sign-state store is closed');
    const prev = this.#tails.get(chainId) ?? Promise.resolve();
    let done!: () => void;
    const gate = new Promise<void>((resolve) => {
      done = resolve;
    });
    const tail = prev.then(() => gate);
    this.#tails.set(chainId, tail);
    await prev;
    try {
      return await fn();
    } finally {
      done();
      if (this.#tails.get(chainId) === tail) this.#tails.delete(chainId);
    }
  }
}

/** A prepared, zero-filled segment file not yet in use. */
interface Spare {
  path: string;
  fd: number;
  size: number;
}

/** Prepares a spare segment without blocking the event loop (compaction in the background). */
async function createSpare(logPath: string, size: number): Promise<Spare> {
  const path = tempPath(logPath);
  const handle = await open(path, 'wx', 0o600);
  try {
    const zeros = Buffer.alloc(Math.min(size, 1024 * 1024));
    for (let o = 0; o < size; o += zeros.length) {
      await handle.write(zeros, 0, Math.min(zeros.length, size - o), o);
    }
    await handle.sync();
  } catch (err) {
    await handle.close();
    rmSync(path, { force: true });
    throw err;
  }
  // Keep a plain descriptor: the switch is synchronous. The FileHandle must not close it later.
  const fd = openSync(path, 'r+');
  await handle.close();
  return { path, fd, size };
}

function discardSpare(spare: Spare): void {
  try {
    closeSync(spare.fd);
  } finally {
    rmSync(spare.path, { force: true });
  }
}

/** Whether the chain's current state equals `s` in every field (without copying it). */
function holds(chain: ChainLog, s: SignState): boolean {
  const last = chain.last.state;
  return (
    compareHRS(last, s) === 0 &&
    bytesEqual(last.signBytes, s.signBytes) &&
    bytesEqual(last.extensionSignBytes, s.extensionSignBytes) &&
    bytesEqual(chain.signature ?? last.signature, s.signature)
  );
}

/** The chain's current state as handed out (a copy, with a signature recorded only in memory). */
function stateOf(chain: ChainLog): SignState {
  const state = copySignState(chain.last.state);
  if (chain.signature !== undefined) state.signature = chain.signature.slice();
  return state;
}

function hrsOf(s: SignState): { height: bigint; round: number; step: number } {
  return { height: s.height, round: s.round, step: s.step };
}

function openIfExists(path: string): number | undefined {
  try {
    return openSync(path, 'r+');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Reads and verifies one chain's state without taking the home lock (`state show|export` next to
 * a running node): the log and its seal, or a 0.1 home's files not migrated yet. The seal is
 * read before the log, so a writer between the two reads can only make the log look newer. A
 * verification failure is retried while the files keep changing (a writer between its steps);
 * the same failure on unchanged files is real and is thrown.
 */
export async function readChainState(home: string, chainId: string): Promise<SignState | undefined> {
  const paths = chainFiles(home, chainId);
  let previous: { log?: Buffer; seal?: Buffer } | undefined;
  for (let attempt = 0; ; attempt++) {
    const sealFile = readBytesIfExists(paths.seal);
    const log = readBytesIfExists(paths.log);
    try {
      const verified = verify(paths, chainId, log, sealFile, false);
      if (verified !== undefined) return copySignState((verified.segment.records.at(-1) as LogRecord).state);
      return validateLegacy(home, chainId, await readLegacyRaw(home, chainId))?.state;
    } catch (err) {
      const unchanged =
        previous !== undefined && sameBytes(previous.log, log) && sameBytes(previous.seal, sealFile);
      if (unchanged || attempt >= 10) throw err;
      previous = {
        ...(log === undefined ? {} : { log }),
        ...(sealFile === undefined ? {} : { seal: sealFile }),
      };
    }
  }
}

function sameBytes(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.equals(b);
}

/** The stem of a chain's files (for tests and tools that look at the directory). */
export { chainFileStem };
