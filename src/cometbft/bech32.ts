/**
 * BIP-173 bech32 (the original checksum constant 1, not bech32m) over 8-bit data, as the Cosmos
 * SDK uses it for `…valcons` addresses and `…valconspub` keys.
 *
 * The checksum and the 8↔5-bit regrouping are @scure/base's audited codec. This module adds what
 * the Cosmos SDK and our callers need around it: the SDK's 1023-character limit instead of
 * BIP-173's 90 (Amino-encoded public keys do not fit in 90), input checks that name the problem
 * and its position, and one error type (KeyFormatError) for every malformed input.
 */
import { bech32 } from '@scure/base';
import { KeyFormatError } from './errors.ts';

const CHARSET = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
/** The Cosmos SDK limit; BIP-173 itself says 90. */
const DEFAULT_MAX_LENGTH = 1023;
const CHECKSUM_LENGTH = 6;

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
  const words = bech32.toWords(bytes);
  const length = lower.length + 1 + words.length + CHECKSUM_LENGTH;
  if (length > DEFAULT_MAX_LENGTH) {
    throw new KeyFormatError(
      `bech32: encoding is ${length} characters, over the ${DEFAULT_MAX_LENGTH} limit`,
    );
  }
  return bech32.encode(lower, words, DEFAULT_MAX_LENGTH);
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
  if (dataPart.length < CHECKSUM_LENGTH) {
    throw new KeyFormatError('bech32: checksum shorter than 6 characters');
  }
  for (let i = 0; i < dataPart.length; i++) {
    if (!CHARSET.includes(dataPart[i]!)) {
      throw new KeyFormatError(
        `bech32: invalid data character ${JSON.stringify(dataPart[i])} at position ${sep + 1 + i}`,
      );
    }
  }
  let words: number[];
  try {
    // Constant 1 is bech32; a bech32m string (constant 0x2bc830a3) fails here on purpose.
    ({ words } = bech32.decode(lower as `${string}1${string}`, maxLength));
  } catch (err) {
    throw new KeyFormatError(`bech32: invalid checksum (${(err as Error).message})`);
  }
  // BIP-173: leftover bits must be padding only, i.e. fewer than 5 of them and all zero;
  // anything else means the string does not encode whole bytes.
  try {
    return { prefix, bytes: bech32.fromWords(words) };
  } catch (err) {
    const message = (err as Error).message;
    if (/excess padding/i.test(message)) {
      throw new KeyFormatError('bech32: data has more than 4 bits of padding');
    }
    if (/non-zero padding/i.test(message)) throw new KeyFormatError('bech32: non-zero padding bits');
    throw new KeyFormatError(`bech32: ${message}`);
  }
}
