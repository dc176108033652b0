/**
 * Privval socket framing (spec §4): every message is `uvarint(len) ‖ body`. The decoder checks
 * the length against the maximum as soon as the prefix is complete, before waiting for (or
 * buffering) the body, so a hostile length cannot make it hold more than the maximum.
 */

import { CodecError } from './errors.ts';
import { encodeMessage } from './messages.ts';
import type { PrivvalMessage, ProtocolVersion } from './types.ts';

/** CometBFT's read limit for one privval message, compared with the length value (v0.34–v1.0). */
export const DEFAULT_MAX_MESSAGE_SIZE = 10240;

const UINT64_MAX = (1n << 64n) - 1n;
/** A uvarint never takes more than 10 bytes. */
const MAX_UVARINT_BYTES = 10;

/** Unsigned LEB128 of `n` (0 ..= 2^64-1). Throws CodecError INVALID_FIELD outside that range. */
export function encodeUvarint(n: number | bigint): Uint8Array {
  if (typeof n === 'number' && !Number.isSafeInteger(n)) {
    throw new CodecError('INVALID_FIELD', `uvarint value is not a safe integer: ${n}`);
  }
  let v = BigInt(n);
  if (v < 0n || v > UINT64_MAX) throw new CodecError('INVALID_FIELD', `uvarint value out of range: ${v}`);
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Uint8Array.from(out);
}

/**
 * Reads a uvarint at `offset`. Returns undefined when `buf` ends before the varint does (more
 * bytes needed). Throws CodecError BAD_VARINT for a varint longer than 10 bytes or one whose
 * value overflows 64 bits (Go's `binary.Uvarint` rules). Non-minimal encodings are accepted, as
 * in Go.
 */
export function decodeUvarint(
  buf: Uint8Array,
  offset: number,
): { value: bigint; bytesRead: number } | undefined {
  let value = 0n;
  // Terminates by the 10th byte: it may only be 0 or 1 (bit 63). Anything larger either
  // overflows 64 bits or carries a continuation bit (an 11th byte), and both are refused.
  for (let i = 0; ; i++) {
    const b = buf[offset + i];
    if (b === undefined) return undefined;
    if (i === MAX_UVARINT_BYTES - 1 && b > 1) {
      throw new CodecError('BAD_VARINT', 'uvarint longer than 10 bytes or overflowing 64 bits');
    }
    value |= BigInt(b & 0x7f) << BigInt(7 * i);
    if (b < 0x80) return { value, bytesRead: i + 1 };
  }
}

/** `uvarint(body.length) ‖ body`. */
export function lengthPrefixed(body: Uint8Array): Uint8Array {
  const prefix = encodeUvarint(body.length);
  const out = new Uint8Array(prefix.length + body.length);
  out.set(prefix, 0);
  out.set(body, prefix.length);
  return out;
}

/** Encodes `msg` for `version` and adds the length prefix: ready to write to the socket. */
export function encodeFramedMessage(msg: PrivvalMessage, version: ProtocolVersion): Uint8Array {
  return lengthPrefixed(encodeMessage(msg, version));
}

/**
 * Splits a byte stream into message bodies. Feed it whatever the socket delivers; it returns the
 * complete bodies in order and keeps the remainder. After it has thrown once it is unusable and
 * every later `push` throws the same error: the connection must be dropped, because the stream
 * position is lost.
 */
export class FrameDecoder {
  private readonly maxLength: number;
  /** Received bytes not yet returned: `store[0 .. length)`, at most one partial frame between pushes. */
  private store: Uint8Array = new Uint8Array(0);
  private length = 0;
  private failure: CodecError | undefined;

  /** `maxLength` bounds the length value of one frame (default DEFAULT_MAX_MESSAGE_SIZE). */
  constructor(opts?: { maxLength?: number }) {
    const maxLength = opts?.maxLength ?? DEFAULT_MAX_MESSAGE_SIZE;
    if (!Number.isSafeInteger(maxLength) || maxLength < 0) {
      throw new RangeError(`maxLength must be a non-negative integer, got ${maxLength}`);
    }
    this.maxLength = maxLength;
  }

  /** Bytes received but not yet returned as part of a complete frame. */
  get bufferedBytes(): number {
    return this.length;
  }

  /** Adds `chunk` and returns every body completed by it, in order (possibly none). */
  push(chunk: Uint8Array): Uint8Array[] {
    if (this.failure !== undefined) throw this.failure;
    this.append(chunk);
    try {
      return this.drain();
    } catch (err) {
      // drain throws only CodecError; remember it so the broken stream is never read again.
      if (err instanceof CodecError) {
        this.failure = err;
        this.store = new Uint8Array(0);
        this.length = 0;
      }
      throw err;
    }
  }

  /**
   * Appends with a growing buffer, so a frame delivered in many small pieces costs linear time
   * (each byte is copied once on arrival and at most once more when its frame completes).
   */
  private append(chunk: Uint8Array): void {
    const needed = this.length + chunk.length;
    if (needed > this.store.length) {
      const grown = new Uint8Array(Math.max(needed, this.store.length * 2, 64));
      grown.set(this.store.subarray(0, this.length));
      this.store = grown;
    }
    this.store.set(chunk, this.length);
    this.length = needed;
  }

  private drain(): Uint8Array[] {
    const bodies: Uint8Array[] = [];
    let pos = 0;
    for (;;) {
      const prefix = decodeUvarint(this.store.subarray(0, this.length), pos);
      if (prefix === undefined) break;
      // Checked before waiting for the body: a hostile length never makes us hold more.
      if (prefix.value > BigInt(this.maxLength)) {
        throw new CodecError(
          'OVERSIZE',
          `message length ${prefix.value} exceeds the maximum ${this.maxLength}`,
        );
      }
      const start = pos + prefix.bytesRead;
      const end = start + Number(prefix.value);
      if (end > this.length) break;
      // A copy: bodies never alias the decoder's buffer or the caller's chunks.
      bodies.push(this.store.slice(start, end));
      pos = end;
    }
    this.release(pos);
    return bodies;
  }

  /** Drops the first `consumed` bytes; shrinks the buffer when it holds far more than one frame. */
  private release(consumed: number): void {
    const rest = this.length - consumed;
    const frameBound = this.maxLength + MAX_UVARINT_BYTES;
    if (rest === 0) {
      this.store = new Uint8Array(0);
    } else if (this.store.length > 2 * frameBound) {
      this.store = this.store.slice(consumed, this.length);
    } else {
      this.store.copyWithin(0, consumed, this.length);
    }
    this.length = rest;
  }
}
