/**
 * The seal of a chain's sign-state log (`<home>/state/<stem>.seal`): a small record, kept beside
 * the log, naming the newest log record the store has made sure of (its generation, its CRC and
 * its height/round/step). file.ts explains why it exists: it is what a copied-back older log
 * cannot fake.
 *
 * The file has two slots of SLOT_BYTES (each in sectors of its own). A new seal goes into the
 * slot NOT holding the newest one (pwrite, then fdatasync), with a sequence number one higher, so
 * a torn write can only damage the slot being written and the other still holds the previous
 * seal. The file size never changes after creation.
 */
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { HRS } from '../cometbft/types.ts';

export const SEAL_MAGIC = Buffer.from('CKMSSEAL', 'latin1');
const SEAL_FORMAT = 1;
/** Distance between the two slots: a torn write of one cannot reach the other. */
export const SLOT_BYTES = 4096;
export const SEAL_FILE_BYTES = 2 * SLOT_BYTES;
/** Bytes of a slot that carry data (the rest stays zero). */
export const SEAL_WRITE_BYTES = 72;
const INT64_MAX = (1n << 63n) - 1n;

/** One seal: the log record it names, and the slot sequence number that orders seals. */
export interface Seal extends HRS {
  seq: bigint;
  generation: bigint;
  /** CRC-32 of the named record, as the log stores it */
  crc: number;
}

/** The newest valid seal of a file and the slot it is in. */
export interface ReadSeal {
  seal: Seal;
  slot: 0 | 1;
}

/** 16 bytes identifying a chain id (seals are fixed-size; the log header holds the id itself). */
export function chainTag(chainId: string): Buffer {
  return createHash('sha256').update(chainId, 'utf8').digest().subarray(0, 16);
}

/** Encodes one slot's data (SEAL_WRITE_BYTES) into `out` at offset 0. */
export function encodeSeal(out: Buffer, tag: Buffer, seal: Seal): void {
  out.fill(0, 0, SEAL_WRITE_BYTES);
  SEAL_MAGIC.copy(out, 0);
  out.writeUInt32LE(SEAL_FORMAT, 8);
  out.writeBigUInt64LE(seal.seq, 16);
  out.writeBigUInt64LE(seal.generation, 24);
  out.writeUInt32LE(seal.crc, 32);
  out.writeUInt32LE(seal.round, 36);
  out.writeBigUInt64LE(seal.height, 40);
  out.writeUInt8(seal.step, 48);
  tag.copy(out, 49);
  out.writeUInt32LE(crc32(out.subarray(0, 68)), 68);
}

/** A new seal file holding `seal` (sequence 1) in slot 0. */
export function newSealFile(tag: Buffer, seal: Omit<Seal, 'seq'>): Buffer {
  const file = Buffer.alloc(SEAL_FILE_BYTES);
  encodeSeal(file, tag, { ...seal, seq: 1n });
  return file;
}

/** What a slot holds: a seal, nothing usable (never written, torn, damaged), or another chain's seal. */
type Slot = { seal: Seal } | { empty: true } | { otherChain: true };

function decodeSlot(b: Buffer, tag: Buffer): Slot {
  if (b.length < SEAL_WRITE_BYTES || !b.subarray(0, 8).equals(SEAL_MAGIC)) return { empty: true };
  if (b.readUInt32LE(8) !== SEAL_FORMAT || b.readUInt32LE(68) !== crc32(b.subarray(0, 68))) {
    return { empty: true };
  }
  if (!b.subarray(49, 65).equals(tag)) return { otherChain: true };
  const seal: Seal = {
    seq: b.readBigUInt64LE(16),
    generation: b.readBigUInt64LE(24),
    crc: b.readUInt32LE(32),
    round: b.readUInt32LE(36),
    height: b.readBigUInt64LE(40),
    step: b.readUInt8(48),
  };
  if (seal.generation < 1n || seal.generation > INT64_MAX || seal.height > INT64_MAX || seal.step > 3) {
    return { empty: true };
  }
  return { seal };
}

/**
 * The newest seal of `file` for the chain of `tag`. Throws a plain Error when no slot holds a
 * valid seal (the file is damaged) or a slot holds another chain's.
 */
export function readSeal(file: Uint8Array, tag: Buffer): ReadSeal {
  const b = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  let best: ReadSeal | undefined;
  for (const slot of [0, 1] as const) {
    const decoded = decodeSlot(b.subarray(slot * SLOT_BYTES, slot * SLOT_BYTES + SEAL_WRITE_BYTES), tag);
    if ('otherChain' in decoded) throw new Error('belongs to another chain');
    if ('seal' in decoded && (best === undefined || decoded.seal.seq > best.seal.seq)) {
      best = { seal: decoded.seal, slot };
    }
  }
  if (best === undefined) throw new Error('holds no valid seal (damaged or edited file)');
  return best;
}
