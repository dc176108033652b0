import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { bech32Decode, bech32Encode } from '../../../src/cometbft/bech32.ts';
import { fromHex, KeyFormatError, toHex } from '../../../src/cometbft/keys.ts';

// BIP-173 "Test vectors": valid bech32 strings (checksum only; they need not be addresses).
const BIP173_VALID = [
  'A12UEL5L',
  'a12uel5l',
  'an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs',
  'abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw',
  // HRP "1" with 82 'q' data characters (90 characters in all).
  '11' + 'q'.repeat(82) + 'c8247j',
  'split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w',
  '?1ezyfcl',
];

// BIP-173 invalid strings, with the reason the BIP gives.
const BIP173_INVALID: [string, RegExp][] = [
  ['\x201nwldj5', /out of range/], // HRP character out of range
  ['\x7f1axkwrx', /out of range/], // HRP character out of range
  ['\x801eym55h', /out of range/], // HRP character out of range
  ['pzry9x0s0muk', /separator/], // no separator character
  ['1pzry9x0s0muk', /empty/], // empty HRP
  ['x1b4n0q5v', /invalid data character/], // invalid data character
  ['li1dgmt3', /shorter than 6/], // too short checksum
  ['de1lg7wt\xff', /invalid data character/], // invalid character in checksum
  ['A1G7SGD8', /checksum/], // checksum calculated with uppercase form of HRP
  ['10a06t8', /empty/], // empty HRP
  ['1qzzfhee', /empty/], // empty HRP
];

// BIP-350 valid bech32m strings: a bech32 decoder must reject every one of them.
const BECH32M = [
  'A1LQFN3A',
  'a1lqfn3a',
  '?1v759aa',
  'abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx',
  'split1checkupstagehandshakeupstreamerranterredcaperredlc445v',
];

test('BIP-173 valid strings decode, and re-encode to their lowercase form', () => {
  for (const s of BIP173_VALID) {
    const { prefix, bytes } = bech32Decode(s);
    assert.equal(prefix, s.slice(0, s.lastIndexOf('1')).toLowerCase());
    assert.equal(bech32Encode(prefix, bytes), s.toLowerCase(), s);
  }
  assert.equal(toHex(bech32Decode('abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw').bytes).length, 40);
  assert.equal(BIP173_VALID[4]!.length, 90);
  assert.deepEqual(bech32Decode(BIP173_VALID[4]!).bytes, new Uint8Array(51));
});

test('BIP-173 invalid strings are rejected for the stated reason', () => {
  for (const [s, why] of BIP173_INVALID) {
    assert.throws(
      () => bech32Decode(s),
      (e: unknown) => e instanceof KeyFormatError && why.test(e.message),
      s,
    );
  }
});

test('BIP-173 length limit: 90 when asked, 1023 by default (Cosmos SDK)', () => {
  // BIP-173's "overall max length exceeded" vector has a valid checksum.
  const s = 'an84characterslonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1569pvx';
  assert.equal(s.length, 91);
  assert.throws(() => bech32Decode(s, 90), /over the 90 limit/);
  assert.equal(bech32Decode(s).prefix, s.slice(0, -7));
  assert.throws(() => bech32Decode('a1' + 'q'.repeat(1016) + 'qqqqqq'), /1023/);
  assert.throws(() => bech32Encode('a', new Uint8Array(640)), /1023/);
  assert.equal(bech32Encode('a', new Uint8Array(600)).length, 8 + 960);
});

test('mixed case is rejected; all-uppercase is accepted', () => {
  const lower = bech32Encode('cosmosvalcons', fromHex('dc52d5cf8dfd1793d71038b342a29b01ad8a5d63'));
  assert.equal(lower, 'cosmosvalcons1m3fdtnudl5te84cs8ze59g5mqxkc5htrltwwk6');
  assert.deepEqual(bech32Decode(lower.toUpperCase()), bech32Decode(lower));
  assert.throws(() => bech32Decode('Cosmosvalcons1m3fdtnudl5te84cs8ze59g5mqxkc5htrltwwk6'), /mixed-case/);
  assert.throws(() => bech32Decode('cosmosvalcons1m3fdtnudl5te84cs8ze59g5mqxkc5htrltwwK6'), /mixed-case/);
  assert.throws(() => bech32Encode('Cosmos', new Uint8Array(1)), /mixed-case/);
  assert.equal(bech32Encode('COSMOS', Uint8Array.of(1)), bech32Encode('cosmos', Uint8Array.of(1)));
});

test('bech32m checksums are not bech32', () => {
  for (const s of BECH32M) assert.throws(() => bech32Decode(s), /invalid checksum/, s);
});

test('every single-character substitution breaks the checksum', () => {
  const s = 'cosmosvalcons1m3fdtnudl5te84cs8ze59g5mqxkc5htrltwwk6';
  const charset = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
  for (let i = s.indexOf('1') + 1; i < s.length; i++) {
    for (const c of charset) {
      if (c === s[i]) continue;
      const t = s.slice(0, i) + c + s.slice(i + 1);
      assert.throws(() => bech32Decode(t), /checksum|padding/, t);
    }
  }
  assert.throws(() => bech32Decode('cosmosvalconz1m3fdtnudl5te84cs8ze59g5mqxkc5htrltwwk6'), /checksum/);
});

test('padding: non-zero pad bits and a whole spare group are rejected', () => {
  // One byte = 8 bits -> 2 words, last word carries 2 pad bits that must be zero.
  const good = bech32Encode('p', Uint8Array.of(0xff));
  assert.deepEqual(bech32Decode(good).bytes, Uint8Array.of(0xff));
  // "p1" + 'q' (a single 5-bit word) has a valid checksum once computed, but 5 bits cannot
  // hold a byte: that is 5 bits of padding.
  const one = encodeWords('p', [0]);
  assert.throws(() => bech32Decode(one), /more than 4 bits of padding/);
  // 0xff encoded with pad bits set: words 31, 31 instead of 31, 28.
  const dirty = encodeWords('p', [31, 31]);
  assert.throws(() => bech32Decode(dirty), /non-zero padding/);
});

test('encode rejects empty and non-printable prefixes', () => {
  assert.throws(() => bech32Encode('', Uint8Array.of(1)), /empty/);
  assert.throws(() => bech32Encode('a b', Uint8Array.of(1)), /out of range/);
  assert.throws(() => bech32Encode('é', Uint8Array.of(1)), /out of range/);
});

test('property: round trip for any printable lowercase prefix and any bytes', () => {
  const hrpChar = fc.integer({ min: 33, max: 126 }).map((c) => String.fromCharCode(c).toLowerCase());
  fc.assert(
    fc.property(
      fc.array(hrpChar, { minLength: 1, maxLength: 30 }).map((a) => a.join('')),
      fc.uint8Array({ maxLength: 100 }),
      (prefix, bytes) => {
        const s = bech32Encode(prefix, bytes);
        const d = bech32Decode(s);
        assert.equal(d.prefix, prefix);
        assert.deepEqual(d.bytes, bytes);
      },
    ),
    { seed: 173, numRuns: 1000 },
  );
});

/** Builds a bech32 string from raw 5-bit words with a correct checksum (test-only, BIP-173 reference algorithm). */
function encodeWords(hrp: string, words: number[]): string {
  const gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
  const values = [
    ...[...hrp].map((c) => c.charCodeAt(0) >> 5),
    0,
    ...[...hrp].map((c) => c.charCodeAt(0) & 31),
    ...words,
    0,
    0,
    0,
    0,
    0,
    0,
  ];
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= gen[i]!;
  }
  const mod = (chk ^ 1) >>> 0;
  const checksum = [0, 1, 2, 3, 4, 5].map((i) => (mod >>> (5 * (5 - i))) & 31);
  const charset = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
  return hrp + '1' + [...words, ...checksum].map((w) => charset[w]).join('');
}
