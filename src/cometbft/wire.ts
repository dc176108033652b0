/**
 * Protobuf wire-format primitives: a writer that emits fields the way gogoproto does (ascending
 * field order is the caller's job; zero scalars are omitted by the field helpers) and a reader
 * that bounds-checks every read and reports every failure as a `CodecError`.
 *
 * Hand-written rather than protobufjs because the reader must be exact about ranges and must
 * never throw anything but `CodecError` on hostile input.
 */

import { CodecError } from './errors.ts';

/** Protobuf wire types this codec reads or writes. Groups (3, 4) are deliberately absent. */
export const WireType = {
  Varint: 0,
  Fixed64: 1,
  LengthDelimited: 2,
  Fixed32: 5,
} as const;

const INT32_MIN = -0x8000_0000;
const INT32_MAX = 0x7fff_ffff;
const UINT32_MAX = 0xffff_ffff;
const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;
const UINT64_MAX = (1n << 64n) - 1n;
/** Largest field number protobuf allows (2^29 - 1). */
const MAX_FIELD_NUMBER = 0x1fff_ffff;

const utf8Encoder = new TextEncoder();
// fatal: invalid UTF-8 must not be replaced by U+FFFD, or two different chain ids could decode
// to the same string and compare equal. ignoreBOM: a leading BOM is data, not to be stripped.
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function isInt32(v: number): boolean {
  return Number.isInteger(v) && v >= INT32_MIN && v <= INT32_MAX;
}

function isUint32(v: number): boolean {
  return Number.isInteger(v) && v >= 0 && v <= UINT32_MAX;
}

/** Throws INVALID_FIELD unless `v` is an int32. */
export function assertInt32(v: number, what: string): void {
  if (!isInt32(v)) throw new CodecError('INVALID_FIELD', `${what} is not an int32: ${v}`);
}

/** Throws INVALID_FIELD unless `v` is an int64. */
export function assertInt64(v: bigint, what: string): void {
  if (typeof v !== 'bigint' || v < INT64_MIN || v > INT64_MAX) {
    throw new CodecError('INVALID_FIELD', `${what} is not an int64: ${String(v)}`);
  }
}

/**
 * Accumulates one protobuf message. Field helpers omit proto3 zero values; `message` always
 * writes (callers decide whether a sub-message is non-nullable).
 */
export class ProtoWriter {
  private readonly out: number[] = [];

  /** Raw unsigned varint of a value in 0 ..= 2^64-1. */
  varint(v: bigint | number): this {
    if (typeof v === 'number') {
      if (!Number.isSafeInteger(v) || v < 0) {
        throw new CodecError('INVALID_FIELD', `varint value out of range: ${v}`);
      }
      // Fast path: plain numbers up to 2^53 without bigint arithmetic.
      let n = v;
      while (n >= 0x80) {
        this.out.push((n % 0x80) | 0x80);
        n = Math.floor(n / 0x80);
      }
      this.out.push(n);
      return this;
    }
    if (v < 0n || v > UINT64_MAX) throw new CodecError('INVALID_FIELD', `varint value out of range: ${v}`);
    let n = v;
    while (n >= 0x80n) {
      this.out.push(Number(n & 0x7fn) | 0x80);
      n >>= 7n;
    }
    this.out.push(Number(n));
    return this;
  }

  /** Field key: `field << 3 | wireType`. */
  tag(field: number, wireType: number): this {
    return this.varint(field * 8 + wireType);
  }

  /** int32 / enum field, omitted when 0. Negative values are sign-extended to 10-byte varints. */
  int32(field: number, v: number, what: string): this {
    assertInt32(v, what);
    if (v === 0) return this;
    this.tag(field, WireType.Varint);
    return v < 0 ? this.varint(BigInt.asUintN(64, BigInt(v))) : this.varint(v);
  }

  /** uint32 field, omitted when 0. */
  uint32(field: number, v: number, what: string): this {
    if (!isUint32(v)) throw new CodecError('INVALID_FIELD', `${what} is not a uint32: ${v}`);
    if (v === 0) return this;
    return this.tag(field, WireType.Varint).varint(v);
  }

  /** int64 field (two's-complement varint), omitted when 0. */
  int64(field: number, v: bigint, what: string): this {
    assertInt64(v, what);
    if (v === 0n) return this;
    return this.tag(field, WireType.Varint).varint(BigInt.asUintN(64, v));
  }

  /** sfixed64 field (8 bytes little-endian two's complement), omitted when 0. */
  sfixed64(field: number, v: bigint, what: string): this {
    assertInt64(v, what);
    if (v === 0n) return this;
    this.tag(field, WireType.Fixed64);
    let n = BigInt.asUintN(64, v);
    for (let i = 0; i < 8; i++) {
      this.out.push(Number(n & 0xffn));
      n >>= 8n;
    }
    return this;
  }

  /** bool field, omitted when false. */
  bool(field: number, v: boolean): this {
    if (!v) return this;
    return this.tag(field, WireType.Varint).varint(1);
  }

  /** bytes field, omitted when empty. */
  bytes(field: number, v: Uint8Array): this {
    if (v.length === 0) return this;
    return this.message(field, v);
  }

  /** string field (UTF-8), omitted when empty. */
  string(field: number, v: string): this {
    if (v.length === 0) return this;
    return this.message(field, utf8Encoder.encode(v));
  }

  /** Length-delimited field written even when empty (sub-messages, oneof cases). */
  message(field: number, body: Uint8Array): this {
    this.tag(field, WireType.LengthDelimited).varint(body.length);
    for (const b of body) this.out.push(b);
    return this;
  }

  /** The encoded message. */
  finish(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}

/**
 * A plain `Uint8Array` view of `b`. Node's `Buffer` (what sockets deliver) is a subclass whose
 * `slice()` returns a view instead of a copy; reading through a plain view makes every
 * `slice()` below a real copy and every decoded byte field a plain `Uint8Array`.
 */
function plainBytes(b: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(b) === Uint8Array.prototype
    ? b
    : new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** One field key as read from the wire. */
export interface FieldKey {
  field: number;
  wireType: number;
}

/**
 * Reads one protobuf message from `buf`. Every method checks bounds and types and throws
 * `CodecError`; `pos` only moves forward, so any loop over `done` terminates.
 */
export class ProtoReader {
  private pos = 0;
  private readonly buf: Uint8Array;

  constructor(buf: Uint8Array) {
    this.buf = plainBytes(buf);
  }

  /** True when the whole buffer has been consumed. */
  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  /**
   * Unsigned varint. Rejects more than 10 bytes and a 10th byte above 1 (value beyond 64 bits),
   * as Go's `binary.Uvarint` does. gogoproto's field decoder would silently drop those bits;
   * no correct encoder produces them, so refusing is the safe reading.
   */
  varint(): bigint {
    let result = 0n;
    // Terminates: the 10th byte either ends the varint (0 or 1) or throws.
    for (let i = 0; ; i++) {
      const b = this.buf[this.pos];
      if (b === undefined) throw new CodecError('TRUNCATED', 'input ends inside a varint');
      this.pos++;
      if (i === 9 && b > 1) throw new CodecError('BAD_VARINT', 'varint overflows 64 bits');
      result |= BigInt(b & 0x7f) << BigInt(7 * i);
      if (b < 0x80) return result;
    }
  }

  /** A field key. Field number 0 and numbers above 2^29-1 are invalid in protobuf. */
  key(): FieldKey {
    const k = this.varint();
    const field = k >> 3n;
    if (field === 0n || field > BigInt(MAX_FIELD_NUMBER)) {
      throw new CodecError('INVALID_FIELD', `invalid field number ${field}`);
    }
    return { field: Number(field), wireType: Number(k & 7n) };
  }

  private expect(key: FieldKey, wireType: number, what: string): void {
    if (key.wireType !== wireType) {
      throw new CodecError(
        'BAD_WIRE_TYPE',
        `${what} (field ${key.field}) has wire type ${key.wireType}, expected ${wireType}`,
      );
    }
  }

  private take(n: number): Uint8Array {
    if (n > this.buf.length - this.pos) throw new CodecError('TRUNCATED', 'input ends inside a field');
    const view = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return view;
  }

  /** int32 or enum field; the two's-complement value must fit in int32. */
  int32(key: FieldKey, what: string): number {
    this.expect(key, WireType.Varint, what);
    const v = BigInt.asIntN(64, this.varint());
    if (v < BigInt(INT32_MIN) || v > BigInt(INT32_MAX)) {
      throw new CodecError('INVALID_FIELD', `${what} out of int32 range: ${v}`);
    }
    return Number(v);
  }

  /** uint32 field. */
  uint32(key: FieldKey, what: string): number {
    this.expect(key, WireType.Varint, what);
    const v = this.varint();
    if (v > BigInt(UINT32_MAX)) throw new CodecError('INVALID_FIELD', `${what} out of uint32 range: ${v}`);
    return Number(v);
  }

  /** int64 field (varint, two's complement). */
  int64(key: FieldKey, what: string): bigint {
    this.expect(key, WireType.Varint, what);
    return BigInt.asIntN(64, this.varint());
  }

  /** bool field; like Go, any non-zero varint is true. */
  bool(key: FieldKey, what: string): boolean {
    this.expect(key, WireType.Varint, what);
    return this.varint() !== 0n;
  }

  /** sfixed64 field. */
  sfixed64(key: FieldKey, what: string): bigint {
    this.expect(key, WireType.Fixed64, what);
    const b = this.take(8);
    let v = 0n;
    for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(b[i] ?? 0);
    return BigInt.asIntN(64, v);
  }

  /** Length-delimited payload as a view into the input (for parsing sub-messages). */
  view(key: FieldKey, what: string): Uint8Array {
    this.expect(key, WireType.LengthDelimited, what);
    const len = this.varint();
    if (len > BigInt(this.buf.length - this.pos)) {
      throw new CodecError('TRUNCATED', `${what} length ${len} exceeds the remaining input`);
    }
    return this.take(Number(len));
  }

  /** bytes field, copied so the result does not alias the input buffer. */
  bytes(key: FieldKey, what: string): Uint8Array {
    return this.view(key, what).slice();
  }

  /** string field; invalid UTF-8 is INVALID_FIELD. */
  string(key: FieldKey, what: string): string {
    const raw = this.view(key, what);
    try {
      return utf8Decoder.decode(raw);
    } catch {
      throw new CodecError('INVALID_FIELD', `${what} is not valid UTF-8`);
    }
  }

  /** Skips an unknown field (proto3 rule). Groups and wire types 6/7 are refused. */
  skip(key: FieldKey): void {
    switch (key.wireType) {
      case WireType.Varint:
        this.varint();
        return;
      case WireType.Fixed64:
        this.take(8);
        return;
      case WireType.LengthDelimited:
        this.view(key, 'unknown field');
        return;
      case WireType.Fixed32:
        this.take(4);
        return;
      default:
        throw new CodecError('BAD_WIRE_TYPE', `field ${key.field} has unsupported wire type ${key.wireType}`);
    }
  }
}
