import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ed25519 } from '@noble/curves/ed25519.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { sha256 } from '@noble/hashes/sha2.js';
import fc from 'fast-check';
import { fromHex, KeyFormatError, publicKeyFromPrivate, toHex } from '../../../src/cometbft/keys.ts';
import type { KeyType, PubKey } from '../../../src/cometbft/types.ts';
import { isLowS, normalizeLowS, verifySignature } from '../../../src/cometbft/verify.ts';

const N = fromHex('fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141');
const HALF_N = fromHex('7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0');
const L = fromHex('1000000000000000000000000000000014def9dea2f79cd65812631a5cf5d3ed');

const msg = new TextEncoder().encode('vote sign bytes');
const secpPriv = fromHex('a96e62ed3955e65be32703f12d87b6b5cf26039ecfa948dc5107a495418e5330');
const secpPub = publicKeyFromPrivate('secp256k1', secpPriv);
const edSeed = sha256(new TextEncoder().encode("it's a secret"));
const edPub = publicKeyFromPrivate('ed25519', edSeed);

function be(b: Uint8Array): bigint {
  return BigInt('0x' + (toHex(b) || '0'));
}
function be32(x: bigint): Uint8Array {
  return fromHex(x.toString(16).padStart(64, '0'));
}
function le(b: Uint8Array): bigint {
  return be(b.slice().reverse());
}
function le32(x: bigint): Uint8Array {
  return be32(x).reverse();
}
/** The same (r, s) with s replaced by n - s: still a valid plain-ECDSA signature. */
function highS(sig: Uint8Array): Uint8Array {
  const out = sig.slice();
  out.set(be32(be(N) - be(sig.subarray(32))), 32);
  return out;
}
function flipBit(b: Uint8Array, bit: number): Uint8Array {
  const out = b.slice();
  out[bit >> 3] = out[bit >> 3]! ^ (1 << (bit & 7));
  return out;
}

test('ed25519: RFC 8032 test 1 (empty message)', () => {
  const pub: PubKey = {
    type: 'ed25519',
    bytes: fromHex('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a'),
  };
  const sig = fromHex(
    'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  );
  assert.equal(verifySignature(pub, new Uint8Array(0), sig), true);
  assert.equal(verifySignature(pub, Uint8Array.of(0), sig), false);
});

test('ed25519: good signature verifies; changed message, signature or key does not', () => {
  const sig = ed25519.sign(msg, edSeed);
  assert.equal(verifySignature(edPub, msg, sig), true);
  assert.equal(verifySignature(edPub, flipBit(msg, 3), sig), false);
  assert.equal(verifySignature(edPub, msg, flipBit(sig, 100)), false);
  assert.equal(verifySignature(edPub, msg, flipBit(sig, 400)), false);
  const other = publicKeyFromPrivate('ed25519', new Uint8Array(32).fill(1));
  assert.equal(verifySignature(other, msg, sig), false);
});

test('ed25519: S + L (malleated scalar) is rejected', () => {
  const sig = ed25519.sign(msg, edSeed);
  const s = le(sig.subarray(32));
  const malleated = sig.slice();
  malleated.set(le32(s + be(L)), 32);
  assert.equal(verifySignature(edPub, msg, malleated), false);
});

test('ed25519: wrong lengths are false, not exceptions', () => {
  const sig = ed25519.sign(msg, edSeed);
  assert.equal(verifySignature(edPub, msg, sig.subarray(0, 63)), false);
  assert.equal(verifySignature(edPub, msg, new Uint8Array([...sig, 0])), false);
  assert.equal(verifySignature({ type: 'ed25519', bytes: edPub.bytes.subarray(0, 31) }, msg, sig), false);
  assert.equal(verifySignature({ type: 'ed25519', bytes: new Uint8Array(33) }, msg, sig), false);
});

test('secp256k1: ECDSA over SHA-256(message), 64-byte r‖s', () => {
  // Signing the digest with no prehash shows the verifier hashes the message exactly once with SHA-256.
  const sig = secp256k1.sign(sha256(msg), secpPriv, { prehash: false });
  assert.equal(sig.length, 64);
  assert.equal(verifySignature(secpPub, msg, sig), true);
  assert.equal(verifySignature(secpPub, sha256(msg), sig), false);
  assert.equal(verifySignature(secpPub, flipBit(msg, 0), sig), false);
  assert.equal(verifySignature(secpPub, msg, flipBit(sig, 7)), false);
  assert.equal(verifySignature(secpPub, msg, flipBit(sig, 300)), false);
  const other = publicKeyFromPrivate('secp256k1', new Uint8Array(32).fill(1));
  assert.equal(verifySignature(other, msg, sig), false);
});

test('secp256k1: high-S is rejected, and accepted after normalizeLowS', () => {
  const low = secp256k1.sign(msg, secpPriv);
  const high = highS(low);
  // The high form is a valid plain ECDSA signature; only the low-S rule rejects it.
  assert.equal(secp256k1.verify(high, msg, secpPub.bytes, { lowS: false }), true);
  assert.equal(isLowS(low), true);
  assert.equal(isLowS(high), false);
  assert.equal(verifySignature(secpPub, msg, high), false);
  const normalized = normalizeLowS(high);
  assert.deepEqual(normalized, low);
  assert.equal(verifySignature(secpPub, msg, normalized), true);
  // Already-low input comes back equal but as a copy.
  const same = normalizeLowS(low);
  assert.deepEqual(same, low);
  assert.notEqual(same, low);
});

test('isLowS / normalizeLowS at the n/2 boundary and on bad input', () => {
  const r = new Uint8Array(32).fill(1);
  const at = new Uint8Array([...r, ...HALF_N]);
  assert.equal(isLowS(at), true);
  assert.deepEqual(normalizeLowS(at), at);
  const above = new Uint8Array([...r, ...be32(be(HALF_N) + 1n)]);
  assert.equal(isLowS(above), false);
  assert.deepEqual(normalizeLowS(above).subarray(32), HALF_N);
  assert.equal(isLowS(new Uint8Array(63)), false);
  assert.throws(() => normalizeLowS(new Uint8Array(65)), KeyFormatError);
  assert.throws(() => normalizeLowS(new Uint8Array([...r, ...N])), /group order/);
});

test('secp256k1: out-of-range r/s, bad keys and wrong lengths are false', () => {
  const sig = secp256k1.sign(msg, secpPriv);
  const zeroR = sig.slice();
  zeroR.fill(0, 0, 32);
  assert.equal(verifySignature(secpPub, msg, zeroR), false);
  const zeroS = sig.slice();
  zeroS.fill(0, 32);
  assert.equal(verifySignature(secpPub, msg, zeroS), false);
  // r + n has the same value mod n; Go would reduce it, we reject the non-canonical encoding.
  const rPlusN = sig.slice();
  const r = be(sig.subarray(0, 32));
  if (r + be(N) < 1n << 256n) {
    rPlusN.set(be32(r + be(N)), 0);
    assert.equal(verifySignature(secpPub, msg, rPlusN), false);
  }
  assert.equal(verifySignature(secpPub, msg, sig.subarray(0, 63)), false);
  assert.equal(verifySignature(secpPub, msg, new Uint8Array([...sig, 1])), false);
  const uncompressed = secp256k1.getPublicKey(secpPriv, false);
  assert.equal(verifySignature({ type: 'secp256k1', bytes: uncompressed }, msg, sig), false);
  const offCurve = new Uint8Array(33);
  offCurve[0] = 2;
  offCurve[32] = 5;
  assert.equal(verifySignature({ type: 'secp256k1', bytes: offCurve }, msg, sig), false);
  assert.equal(verifySignature({ type: 'bls12_381' as KeyType, bytes: new Uint8Array(96) }, msg, sig), false);
  // A key of the other type never verifies.
  assert.equal(verifySignature({ type: 'ed25519', bytes: edPub.bytes }, msg, sig), false);
});

test('property: verifySignature never throws and returns a boolean on arbitrary input', () => {
  const lengthBiased = (lens: number[]) =>
    fc.oneof(
      fc.constantFrom(...lens).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
      fc.uint8Array({ maxLength: 100 }),
    );
  const validish = fc.constantFrom(edPub, secpPub);
  const randomKey = fc.record({
    type: fc.constantFrom<KeyType | 'sr25519'>('ed25519', 'secp256k1', 'sr25519') as fc.Arbitrary<KeyType>,
    bytes: lengthBiased([32, 33]).map((b) => {
      // Make compressed-looking secp256k1 prefixes common so point decoding is exercised.
      if (b.length === 33 && b[0]! > 3) b[0] = 2 + (b[0]! & 1);
      return b;
    }),
  });
  fc.assert(
    fc.property(
      fc.oneof(validish, randomKey),
      fc.uint8Array({ maxLength: 200 }),
      lengthBiased([64]),
      (pubKey, message, signature) => {
        const r = verifySignature(pubKey, message, signature);
        assert.equal(typeof r, 'boolean');
      },
    ),
    { seed: 0x5eed, numRuns: 2000 },
  );
});

test('property: a valid signature verifies and any one-bit change to it does not', () => {
  fc.assert(
    fc.property(
      fc.constantFrom<KeyType>('ed25519', 'secp256k1'),
      fc.uint8Array({ minLength: 32, maxLength: 32 }).filter((k) => secp256k1.utils.isValidSecretKey(k)),
      fc.uint8Array({ maxLength: 120 }),
      fc.integer({ min: 0, max: 511 }),
      (type, priv, message, bit) => {
        const pub = publicKeyFromPrivate(type, priv);
        const sig = type === 'ed25519' ? ed25519.sign(message, priv) : secp256k1.sign(message, priv);
        assert.equal(verifySignature(pub, message, sig), true);
        assert.equal(verifySignature(pub, message, flipBit(sig, bit)), false);
      },
    ),
    { seed: 8032, numRuns: 200 },
  );
});
