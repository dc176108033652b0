/**
 * The on-disk format of a chain's sign-state log (`<home>/state/<stem>.log`), the single-node
 * store's write-ahead file. Pure encoding and decoding; file.ts does the I/O and the rules.
 *
 * A log file is one *segment*: a preallocated, zero-filled file whose size never changes after
 * it is created, so appending a record is a pwrite into already written blocks and one fdatasync
 * that flushes data only (no size or block-map change for the journal to commit).
 *
 *   offset 0     header (HEADER_BYTES, its own sectors): magic, format, a random salt, the seal
 *                the previous segment had when this one replaced it, the chain id, a CRC-32
 *   offset 4096  records, back to back, each: u32 body length ‖ u32 CRC-32 ‖ body
 *                body: u8 kind ‖ u64 generation ‖ u64 height ‖ u32 round ‖ u8 step ‖
 *                      u32 n ‖ sign bytes ‖ u32 n ‖ extension sign bytes ‖ u32 n ‖ signature
 *   after them   zeros up to the end of the file
 *
 * Integers are little-endian. A record's CRC covers the segment salt, its length and its body, so
 * a record is valid only whole and only in the segment that wrote it. Reading stops at the first
 * length of zero or the first record that is cut short or fails its CRC: that is where the last
 * write was interrupted (records are written one at a time, each made durable before the next
 * is written, so nothing valid can follow an invalid one that was not written after it). A
 * record whose CRC holds but whose content breaks the rules (generations not consecutive, a
 * height/round/step going down, fields out of range) is not a torn write: it is an error.
 *
 * Every record carries the chain's *generation*: 1 for the first state ever written, +1 per
 * record. A segment's first record is the state it starts from (created by `state init|import`,
 * migrated from a 0.1 home, or a checkpoint that compaction copied from the previous segment).
 */
import { crc32 } from 'node:zlib';
import { compareHRS } from '../cometbft/types.ts';
import type { SignState } from './types.ts';

export const LOG_MAGIC = Buffer.from('CKMS-LOG', 'latin1');
export const LOG_FORMAT = 1;
/** Bytes reserved for the header; records start here. */
export const HEADER_BYTES = 4096;
/** Where the header keeps the segment's 16-byte salt. */
export const SALT_OFFSET = 16;
export const SALT_BYTES = 16;
/** Longest chain id a header holds (config allows 50 characters). */
const MAX_CHAIN_ID_BYTES = 2048;
/** u32 length ‖ u32 CRC */
const RECORD_PREFIX = 8;
/** kind, generation, height, round, step and three u32 lengths */
const BODY_FIXED = 1 + 8 + 8 + 4 + 1 + 4 * 3;
/** Bytes a record takes besides its three byte strings. */
export const RECORD_OVERHEAD = RECORD_PREFIX + BODY_FIXED;
/** Larger bodies are not records (the largest real one carries a 1 MiB vote extension). */
const MAX_BODY = 8 * 1024 * 1024;
const INT64_MAX = (1n << 63n) - 1n;
const INT32_MAX = 2 ** 31 - 1;

/** Why a record was written. */
export const RecordKind = {
  /** the state a segment starts from: `state init`, `state import` of a chain without state, `--force` */
  Created: 1,
  /** the state a 0.1 home held (`<stem>.json` + `<stem>.hwm`), moved into a log on first open */
  Migrated: 2,
  /** a reservation: a higher HRS (or the same with sign bytes over a state without) and its bytes */
  Reservation: 3,
  /** the signature over the previous record's sign bytes */
  Signature: 4,
  /** compaction: the previous segment's last state, first record of the new segment */
  Checkpoint: 5,
} as const;
export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind];
const KIND_NAMES = new Map<number, string>(Object.entries(RecordKind).map(([name, v]) => [v, name]));

/** A seal as a segment header remembers it: the generation and CRC of the record it named. */
export interface SealRef {
  generation: bigint;
  crc: number;
}

/** A segment's header. */
export interface SegmentHeader {
  chainId: string;
  salt: Buffer;
  /** the seal when this segment replaced the previous one (none for a segment that starts a history) */
  previousSeal: SealRef | undefined;
}

/** One decoded record. */
export interface LogRecord {
  kind: RecordKind;
  generation: bigint;
  /** CRC-32 as stored (seals name records by generation and CRC) */
  crc: number;
  offset: number;
  /** bytes the record takes in the file */
  length: number;
  state: SignState;
}

/** A segment as read: its header, its valid records, where the next one goes, and what follows. */
export interface ScannedSegment {
  header: SegmentHeader;
  records: LogRecord[];
  /** offset of the first byte after the last valid record */
  end: number;
  /** false when bytes after `end` are not all zero (an interrupted write left part of a record) */
  cleanTail: boolean;
}

/** A segment that cannot be used; the message says why (file.ts adds the file and the remedy). */
export class LogFormatError extends Error {
  override name = 'LogFormatError';
}

/** CRC-32 of a segment's salt: the starting value of every record CRC in that segment. */
export function saltCrc(salt: Uint8Array): number {
  return crc32(salt);
}

/** Encodes a segment header into a HEADER_BYTES buffer (zero padded). */
export function encodeHeader(h: SegmentHeader): Buffer {
  const id = Buffer.from(h.chainId, 'utf8');
  if (id.length > MAX_CHAIN_ID_BYTES) {
    throw new LogFormatError(`chain id longer than ${MAX_CHAIN_ID_BYTES} bytes`);
  }
  if (h.salt.length !== SALT_BYTES) throw new LogFormatError('segment salt must be 16 bytes');
  const out = Buffer.alloc(HEADER_BYTES);
  LOG_MAGIC.copy(out, 0);
  out.writeUInt32LE(LOG_FORMAT, 8);
  let o = SALT_OFFSET;
  h.salt.copy(out, o);
  o += SALT_BYTES;
  out.writeBigUInt64LE(h.previousSeal?.generation ?? 0n, o);
  o += 8;
  out.writeUInt32LE(h.previousSeal?.crc ?? 0, o);
  o += 4;
  out.writeUInt16LE(id.length, o);
  o += 2;
  id.copy(out, o);
  o += id.length;
  out.writeUInt32LE(o - 16, 12);
  out.writeUInt32LE(crc32(out.subarray(0, o)), o);
  return out;
}

/** Decodes and checks a segment header. */
export function decodeHeader(buf: Uint8Array): SegmentHeader {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < HEADER_BYTES) throw new LogFormatError('shorter than its header (not a sign-state log)');
  if (!b.subarray(0, 8).equals(LOG_MAGIC)) throw new LogFormatError('not a sign-state log (bad magic)');
  const format = b.readUInt32LE(8);
  if (format !== LOG_FORMAT) throw new LogFormatError(`unsupported log format ${format}`);
  const bodyLength = b.readUInt32LE(12);
  if (bodyLength < 30 || 16 + bodyLength + 4 > HEADER_BYTES) throw new LogFormatError('header damaged');
  const end = 16 + bodyLength;
  if (b.readUInt32LE(end) !== crc32(b.subarray(0, end))) {
    throw new LogFormatError('header checksum mismatch (damaged or edited file)');
  }
  const salt = Buffer.from(b.subarray(SALT_OFFSET, SALT_OFFSET + SALT_BYTES));
  const prevGeneration = b.readBigUInt64LE(32);
  const prevCrc = b.readUInt32LE(40);
  const idLength = b.readUInt16LE(44);
  if (46 + idLength !== end) throw new LogFormatError('header damaged');
  return {
    chainId: b.toString('utf8', 46, end),
    salt,
    previousSeal: prevGeneration === 0n ? undefined : { generation: prevGeneration, crc: prevCrc },
  };
}

/** Bytes the record of `state` takes. */
export function recordLength(state: SignState): number {
  return RECORD_OVERHEAD + state.signBytes.length + state.extensionSignBytes.length + state.signature.length;
}

/**
 * Encodes a record into `out` at offset 0 (it must hold {@link recordLength} bytes) and returns
 * its CRC. Writing into a caller's buffer keeps the hot path free of allocations.
 */
export function encodeRecord(
  out: Buffer,
  segmentSaltCrc: number,
  kind: RecordKind,
  generation: bigint,
  state: SignState,
): number {
  if (generation < 1n || generation > INT64_MAX) throw new LogFormatError('generation out of range');
  if (state.height < 0n || state.height > INT64_MAX) throw new LogFormatError('height out of range');
  const bodyLength = recordLength(state) - RECORD_PREFIX;
  let o = RECORD_PREFIX;
  o = out.writeUInt8(kind, o);
  o = out.writeBigUInt64LE(generation, o);
  o = out.writeBigUInt64LE(state.height, o);
  o = out.writeUInt32LE(state.round, o);
  o = out.writeUInt8(state.step, o);
  for (const bytes of [state.signBytes, state.extensionSignBytes, state.signature]) {
    o = out.writeUInt32LE(bytes.length, o);
    out.set(bytes, o);
    o += bytes.length;
  }
  out.writeUInt32LE(bodyLength, 0);
  const crc = recordCrc(out, segmentSaltCrc, bodyLength);
  out.writeUInt32LE(crc, 4);
  return crc;
}

function recordCrc(record: Buffer, segmentSaltCrc: number, bodyLength: number): number {
  return crc32(
    record.subarray(RECORD_PREFIX, RECORD_PREFIX + bodyLength),
    crc32(record.subarray(0, 4), segmentSaltCrc),
  );
}

const ZEROS = Buffer.alloc(64 * 1024);

function allZero(b: Buffer): boolean {
  for (let o = 0; o < b.length; o += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - o);
    if (!b.subarray(o, o + n).equals(ZEROS.subarray(0, n))) return false;
  }
  return true;
}

/**
 * Reads a whole segment file: the header, then records up to the first invalid one (see the
 * module comment). Throws LogFormatError for an unusable header, a segment without any valid
 * record, or valid records that break the rules.
 */
export function scanSegment(file: Uint8Array): ScannedSegment {
  const b = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  const header = decodeHeader(b);
  const seed = saltCrc(header.salt);
  const records: LogRecord[] = [];
  let o = HEADER_BYTES;
  while (o + RECORD_PREFIX <= b.length) {
    const bodyLength = b.readUInt32LE(o);
    if (bodyLength < BODY_FIXED || bodyLength > MAX_BODY || o + RECORD_PREFIX + bodyLength > b.length) break;
    const rec = b.subarray(o, o + RECORD_PREFIX + bodyLength);
    const crc = rec.readUInt32LE(4);
    if (crc !== recordCrc(rec, seed, bodyLength)) break;
    const record = decodeBody(rec, crc, o);
    checkSequence(records.at(-1), record);
    records.push(record);
    o += rec.length;
  }
  if (records.length === 0) throw new LogFormatError('holds no complete record (damaged file)');
  return { header, records, end: o, cleanTail: allZero(b.subarray(o)) };
}

function decodeBody(rec: Buffer, crc: number, offset: number): LogRecord {
  let o = RECORD_PREFIX;
  const kind = rec.readUInt8(o);
  o += 1;
  if (!KIND_NAMES.has(kind)) {
    throw new LogFormatError(`record at offset ${offset} has an unknown kind ${kind}`);
  }
  const generation = rec.readBigUInt64LE(o);
  o += 8;
  const height = rec.readBigUInt64LE(o);
  o += 8;
  const round = rec.readUInt32LE(o);
  o += 4;
  const step = rec.readUInt8(o);
  o += 1;
  if (generation < 1n || generation > INT64_MAX || height > INT64_MAX || round > INT32_MAX || step > 3) {
    throw new LogFormatError(`record at offset ${offset} holds values out of range`);
  }
  const bytes: Uint8Array[] = [];
  for (let i = 0; i < 3; i++) {
    if (o + 4 > rec.length) throw new LogFormatError(`record at offset ${offset} is malformed`);
    const n = rec.readUInt32LE(o);
    o += 4;
    if (o + n > rec.length) throw new LogFormatError(`record at offset ${offset} is malformed`);
    bytes.push(new Uint8Array(rec.subarray(o, o + n)));
    o += n;
  }
  if (o !== rec.length) throw new LogFormatError(`record at offset ${offset} is malformed`);
  const [signBytes, extensionSignBytes, signature] = bytes as [Uint8Array, Uint8Array, Uint8Array];
  return {
    kind: kind as RecordKind,
    generation,
    crc,
    offset,
    length: rec.length,
    state: { height, round, step, signBytes, extensionSignBytes, signature },
  };
}

/** What may follow `prev` in one segment (the rules file.ts writes by). */
function checkSequence(prev: LogRecord | undefined, next: LogRecord): void {
  const at = `record at offset ${next.offset}`;
  if (prev === undefined) {
    if (next.kind === RecordKind.Reservation || next.kind === RecordKind.Signature) {
      throw new LogFormatError(`${at}: a segment must start from a created, migrated or checkpoint state`);
    }
    return;
  }
  if (next.generation !== prev.generation + 1n) {
    throw new LogFormatError(`${at}: generation ${next.generation} after ${prev.generation}`);
  }
  if (next.kind === RecordKind.Reservation) {
    if (compareHRS(next.state, prev.state) < 0) {
      throw new LogFormatError(`${at}: a reservation below the state before it`);
    }
    return;
  }
  if (next.kind === RecordKind.Signature) {
    const same =
      compareHRS(next.state, prev.state) === 0 &&
      Buffer.compare(next.state.signBytes, prev.state.signBytes) === 0 &&
      Buffer.compare(next.state.extensionSignBytes, prev.state.extensionSignBytes) === 0;
    if (!same) throw new LogFormatError(`${at}: a signature record that does not sign the state before it`);
    return;
  }
  throw new LogFormatError(`${at}: a ${KIND_NAMES.get(next.kind)} record can only start a segment`);
}
