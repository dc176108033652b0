/**
 * BIP-173 bech32 (the original checksum constant 1, not bech32m) over 8-bit data, as the Cosmos
 * SDK uses it for `…valcons` addresses and `…valconspub` keys.
 *
 * The SDK lifts BIP-173's 90-character limit to 1023 so that Amino-encoded public keys fit; we
 * do the same. Everything else follows BIP-173: one case throughout, HRP characters 33..126,
 * a six-character checksum, and a 5→8-bit regrouping whose padding must be fewer than five zero bits.
 */

import { KeyFormatError } from './keys.ts';

const CHARSET = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
const GENERATORS = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
/** The Cosmos SDK limit; BIP-173 itself says 90. */
const DEFAULT_MAX_LENGTH = 1023;

const CHARSET_REVERSE: ReadonlyMap<string, number> = new Map([...CHARSET].map((c, i) => [c, i]));

function polymod(values: readonly number[]): number {
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) {
      if ((top >>> i) & 1) chk ^= GENERATORS[i]!;
    }
  }
  return chk >>> 0;
}

function hrpExpand(hrp: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < hrp.length; i++) out.push(hrp.charCodeAt(i) >> 5);
  out.push(0);
  for (let i = 0; i < hrp.length; i++) out.push(hrp.charCodeAt(i) & 31);
  return out;
}

function createChecksum(hrp: string, words: readonly number[]): number[] {
  const mod = polymod([...hrpExpand(hrp), ...words, 0, 0, 0, 0, 0, 0]) ^ 1;
  const out: number[] = [];
  for (let i = 0; i < 6; i++) out.push((mod >>> (5 * (5 - i))) & 31);
  return out;
}

function toWords(bytes: Uint8Array): number[] {
  const words: number[] = [];
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = ((acc << 8) | b) & 0xfff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      words.push((acc >>> bits) & 31);
    }
  }
  if (bits > 0) words.push((acc << (5 - bits)) & 31);
  return words;
}

function fromWords(words: readonly number[]): Uint8Array {
  const out: number[] = [];
  let acc = 0;
  let bits = 0;
  for (const w of words) {
    acc = ((acc << 5) | w) & 0xfff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >>> bits) & 0xff);
    }
  }
  // BIP-173: leftover bits must be padding only, i.e. fewer than 5 of them and all zero;
  // anything else means the string does not encode whole bytes.
  if (bits >= 5) throw new KeyFormatError('bech32: data has more than 4 bits of padding');
  if ((acc & ((1 << bits) - 1)) !== 0) throw new KeyFormatError('bech32: non-zero padding bits');
  return Uint8Array.from(out);
}

function checkHrp(prefix: string): void {
  if (prefix.length === 0) throw new KeyFormatError('bech32: empty human-readable prefix');
  for (let i = 0; i < prefix.length; i++) {
    const c = prefix.charCodeAt(i);
    if (c < 33 || c > 126) {
      throw new KeyFormatError(`bech32: prefix character code ${c} at position ${i} is out of range 33..126`);
    }
  }
}

/**
 * Encodes `bytes` as bech32 with human-readable prefix `prefix` (returned in lowercase).
 * Throws KeyFormatError for an empty or non-printable prefix, a mixed-case prefix, or a result
 * longer than 1023 characters.
 */
export function bech32Encode(prefix: string, bytes: Uint8Array): string {
  checkHrp(prefix);
  const lower = prefix.toLowerCase();
  if (lower !== prefix && prefix.toUpperCase() !== prefix) {
    throw new KeyFormatError('bech32: mixed-case prefix');
  }
  const words = toWords(bytes);
  const s = lower + '1' + [...words, ...createChecksum(lower, words)].map((w) => CHARSET[w]).join('');
  if (s.length > DEFAULT_MAX_LENGTH) {
    throw new KeyFormatError(
      `bech32: encoding is ${s.length} characters, over the ${DEFAULT_MAX_LENGTH} limit`,
    );
  }
  return s;
}

/**
 * Decodes a bech32 string into its (lowercase) prefix and 8-bit data. Throws KeyFormatError on
 * mixed case, a missing separator, an empty prefix, bad characters, a bad checksum (including a
 * bech32m checksum), invalid padding, or a length over `maxLength` (default 1023, the Cosmos SDK
 * limit; pass 90 for strict BIP-173).
 */
export function bech32Decode(
  s: string,
  maxLength = DEFAULT_MAX_LENGTH,
): { prefix: string; bytes: Uint8Array } {
  if (s.length > maxLength) {
    throw new KeyFormatError(`bech32: string is ${s.length} characters, over the ${maxLength} limit`);
  }
  const lower = s.toLowerCase();
  if (lower !== s && s.toUpperCase() !== s) throw new KeyFormatError('bech32: mixed-case string');
  const sep = lower.lastIndexOf('1');
  if (sep < 0) throw new KeyFormatError('bech32: no separator "1"');
  const prefix = lower.slice(0, sep);
  checkHrp(prefix);
  const dataPart = lower.slice(sep + 1);
  if (dataPart.length < 6) throw new KeyFormatError('bech32: checksum shorter than 6 characters');
  const words: number[] = [];
  for (let i = 0; i < dataPart.length; i++) {
    const w = CHARSET_REVERSE.get(dataPart[i]!);
    if (w === undefined) {
      throw new KeyFormatError(
        `bech32: invalid data character ${JSON.stringify(dataPart[i])} at position ${sep + 1 + i}`,
      );
    }
    words.push(w);
  }
  // Constant 1 is bech32; a bech32m string (constant 0x2bc830a3) fails here on purpose.
  if (polymod([...hrpExpand(prefix), ...words]) !== 1) throw new KeyFormatError('bech32: invalid checksum');
  return { prefix, bytes: fromWords(words.slice(0, -6)) };
}
