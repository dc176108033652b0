/**
 * An independent decoder of CometBFT's canonical sign bytes, for the witness checker.
 *
 * It deliberately shares no code with src/cometbft/: the checker must not trust the system under
 * test, and a bug in the product's encoder must not be mirrored by the decoder that judges it.
 * What it reads (uvarint length prefix, then proto3 fields):
 *
 *   CanonicalVote          1 type (varint)  2 height (sfixed64)  3 round (sfixed64)
 *                          4 block_id (msg) 5 timestamp (msg)    6 chain_id (string)
 *   CanonicalProposal      1 type = 32      2 height  3 round    4 pol_round (varint int64)
 *                          5 block_id (msg) 6 timestamp (msg)    7 chain_id (string)
 *   CanonicalVoteExtension 1 extension (bytes) 2 height 3 round  4 chain_id (string)
 *
 * A vote and a proposal start with their type (a varint, never 0 for what a validator signs); an
 * extension starts with its bytes or, when empty, with the height. Whatever is not one of the three (a key self-test, garbage) decodes to
 * undefined and is reported by the checker as "other".
 */

/** Step of an HRS as the privval guard orders it. */
export const STEP = { propose: 1, prevote: 2, precommit: 3 } as const;

/** One decoded canonical message. `block` and `timestamp` are hex / "seconds.nanos" strings. */
export type Canonical =
  | {
      kind: 'vote' | 'proposal';
      chainId: string;
      height: bigint;
      round: bigint;
      step: number;
      /** hex of the encoded CanonicalBlockID ('' for nil), plus pol_round for proposals */
      block: string;
      timestamp: string;
    }
  | { kind: 'extension'; chainId: string; height: bigint; round: bigint; extension: string };

interface Field {
  no: number;
  wire: number;
  varint?: bigint;
  bytes?: Uint8Array;
}

class Reader {
  pos = 0;
  constructor(private readonly buf: Uint8Array) {}
  get done(): boolean {
    return this.pos >= this.buf.length;
  }
  varint(): bigint {
    let out = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.pos >= this.buf.length) throw new Error('truncated varint');
      const b = this.buf[this.pos++]!;
      out |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return out;
    }
    throw new Error('varint too long');
  }
  take(n: number): Uint8Array {
    if (n < 0 || this.pos + n > this.buf.length) throw new Error('truncated field');
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
}

function fields(buf: Uint8Array): Field[] {
  const r = new Reader(buf);
  const out: Field[] = [];
  while (!r.done) {
    const tag = r.varint();
    const no = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    if (no === 0) throw new Error('field number 0');
    if (wire === 0) out.push({ no, wire, varint: r.varint() });
    else if (wire === 1) out.push({ no, wire, bytes: r.take(8) });
    else if (wire === 2) out.push({ no, wire, bytes: r.take(Number(r.varint())) });
    else if (wire === 5) out.push({ no, wire, bytes: r.take(4) });
    else throw new Error(`unsupported wire type ${wire}`);
  }
  return out;
}

const hex = (b: Uint8Array | undefined): string => Buffer.from(b ?? new Uint8Array(0)).toString('hex');

/** A sfixed64 (little-endian two's complement); 0 when the field is absent. */
function sfixed64(f: Field | undefined, name: string): bigint {
  if (f === undefined) return 0n;
  if (f.wire !== 1 || f.bytes === undefined) throw new Error(`${name}: not a fixed64`);
  return Buffer.from(f.bytes).readBigInt64LE(0);
}

function int64(v: bigint | undefined): bigint {
  const x = v ?? 0n;
  return x >= 1n << 63n ? x - (1n << 64n) : x;
}

function text(f: Field | undefined, name: string): string {
  if (f === undefined) return '';
  if (f.wire !== 2) throw new Error(`${name}: not length-delimited`);
  return new TextDecoder('utf-8', { fatal: true }).decode(f.bytes);
}

/** google.protobuf.Timestamp as "seconds.nanos" (both varint; absent = 0). */
function timestamp(f: Field | undefined): string {
  if (f === undefined || f.wire !== 2 || f.bytes === undefined) throw new Error('timestamp missing');
  const ts = fields(f.bytes);
  const seconds = int64(ts.find((x) => x.no === 1)?.varint);
  const nanos = int64(ts.find((x) => x.no === 2)?.varint);
  return `${seconds}.${nanos.toString().padStart(9, '0')}`;
}

/** Decodes one length-prefixed canonical message, or undefined if `data` is none of the three. */
export function decodeCanonical(data: Uint8Array): Canonical | undefined {
  try {
    const r = new Reader(data);
    const len = Number(r.varint());
    if (r.pos + len !== data.length) return undefined;
    const fs = fields(data.subarray(r.pos));
    const get = (no: number): Field | undefined => {
      const all = fs.filter((f) => f.no === no);
      if (all.length > 1) throw new Error(`field ${no} repeated`);
      return all[0];
    };
    const height = sfixed64(get(2), 'height');
    const round = sfixed64(get(3), 'round');
    const typeField = get(1);
    if (typeField === undefined || typeField.wire === 2) {
      // CanonicalVoteExtension: field 1 (if any) is the extension bytes, field 4 the chain id.
      if (fs.some((f) => f.no > 4)) return undefined;
      return {
        kind: 'extension',
        chainId: text(get(4), 'chain_id'),
        height,
        round,
        extension: hex(typeField?.bytes),
      };
    }
    if (typeField.wire !== 0) return undefined;
    const type = Number(typeField.varint ?? 0n);
    if (type === 32) {
      const pol = int64(get(4)?.varint);
      return {
        kind: 'proposal',
        chainId: text(get(7), 'chain_id'),
        height,
        round,
        step: STEP.propose,
        block: `${hex(get(5)?.bytes)}/pol${pol}`,
        timestamp: timestamp(get(6)),
      };
    }
    if (type !== 1 && type !== 2) return undefined;
    return {
      kind: 'vote',
      chainId: text(get(6), 'chain_id'),
      height,
      round,
      step: type === 1 ? STEP.prevote : STEP.precommit,
      block: hex(get(4)?.bytes),
      timestamp: timestamp(get(5)),
    };
  } catch {
    return undefined;
  }
}
