/**
 * Signature verification with CometBFT's rules (spec §9), and the low-S helpers an HSM backend
 * needs because PKCS#11 ECDSA returns either S.
 */

import { createPublicKey, type KeyObject, verify as nodeVerify } from 'node:crypto';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { bytesEqual } from './bytes.ts';
import { KeyFormatError } from './keys.ts';
import type { PubKey } from './types.ts';

const SIG_LEN = 64;
const N = secp256k1.Point.CURVE().n;
const HALF_N = N >> 1n;

/**
 * Public keys are parsed once and cached: verification sits on the signing hot path (every HSM
 * signature is checked before it leaves the process) and OpenSSL via node:crypto is ~20× faster
 * than a pure-JS verifier there. A node signs with a handful of keys, so the cache stays tiny.
 */
const KEY_CACHE_LIMIT = 256;
const keyCache = new Map<string, KeyObject>();
/**
 * The same, found by the key bytes' identity: a signer verifies against one `PubKey` object
 * thousands of times, and this skips building the string key of `keyCache` for it. The entry
 * keeps a copy of the bytes and is used only while they are still equal (a caller may reuse an
 * array for another key).
 */
const keyByBytes = new WeakMap<Uint8Array, { type: PubKey['type']; bytes: Uint8Array; key: KeyObject }>();

function keyObject(pubKey: PubKey): KeyObject {
  const known = keyByBytes.get(pubKey.bytes);
  if (known !== undefined && known.type === pubKey.type && bytesEqual(known.bytes, pubKey.bytes)) {
    return known.key;
  }
  const cacheKey = `${pubKey.type}:${Buffer.from(pubKey.bytes).toString('hex')}`;
  let key = keyCache.get(cacheKey);
  if (key === undefined) {
    key = pubKey.type === 'ed25519' ? ed25519KeyObject(pubKey.bytes) : secp256k1KeyObject(pubKey.bytes);
    if (keyCache.size >= KEY_CACHE_LIMIT) keyCache.clear();
    keyCache.set(cacheKey, key);
  }
  keyByBytes.set(pubKey.bytes, { type: pubKey.type, bytes: pubKey.bytes.slice(), key });
  return key;
}

function ed25519KeyObject(raw: Uint8Array): KeyObject {
  return createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(raw).toString('base64url') },
    format: 'jwk',
  });
}

function secp256k1KeyObject(compressed: Uint8Array): KeyObject {
  // Throws for an off-curve or malformed point; the caller turns that into `false`.
  const point = secp256k1.Point.fromBytes(compressed);
  const uncompressed = point.toBytes(false);
  return createPublicKey({
    key: {
      kty: 'EC',
      crv: 'secp256k1',
      x: Buffer.from(uncompressed.subarray(1, 33)).toString('base64url'),
      y: Buffer.from(uncompressed.subarray(33, 65)).toString('base64url'),
    },
    format: 'jwk',
  });
}

function bigintFromBytes(b: Uint8Array): bigint {
  let x = 0n;
  for (const byte of b) x = (x << 8n) | BigInt(byte);
  return x;
}

function bytes32(x: bigint): Uint8Array {
  const out = new Uint8Array(32);
  for (let i = 31; i >= 0; i--) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return out;
}

/**
 * Verifies `signature` over `message` under `pubKey`. Never throws: any malformed input
 * (wrong lengths, off-curve key, out-of-range scalars, unknown type) is simply `false`.
 *
 * - ed25519: RFC 8032 as OpenSSL checks it (canonical S, cofactorless). Every signature this
 *   accepts is also accepted by CometBFT's ZIP-215 rules (v0.38+) and Go's x/crypto (v0.34/v0.37),
 *   so a `true` here means the node will accept the signature.
 * - secp256k1: ECDSA over SHA-256(message), 64-byte `r ‖ s`, 33-byte compressed key; high S
 *   (S > n/2) is rejected as CometBFT does, so a malleated copy of a valid signature fails.
 *   r and s must be in 1..n-1 (Go reduces out-of-range values mod n instead; rejecting such
 *   non-canonical encodings is stricter and no honest signer produces them).
 */
export function verifySignature(pubKey: PubKey, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    if (!(message instanceof Uint8Array) || !(signature instanceof Uint8Array)) return false;
    if (signature.length !== SIG_LEN) return false;
    switch (pubKey.type) {
      case 'ed25519':
        if (pubKey.bytes.length !== 32) return false;
        return nodeVerify(null, message, keyObject(pubKey), signature);
      case 'secp256k1':
        if (pubKey.bytes.length !== 33) return false;
        if (!isLowS(signature) || !scalarsInRange(signature)) return false;
        return nodeVerify(
          'sha256',
          message,
          { key: keyObject(pubKey), dsaEncoding: 'ieee-p1363' },
          signature,
        );
      default:
        return false;
    }
  } catch {
    // Key parsing throws on encodings it cannot use (off-curve points, bad lengths); for a
    // verifier those are just invalid signatures.
    return false;
  }
}

function scalarsInRange(signature: Uint8Array): boolean {
  const r = bigintFromBytes(signature.subarray(0, 32));
  const s = bigintFromBytes(signature.subarray(32));
  return r > 0n && r < N && s > 0n && s < N;
}

/** True when `signature` is a 64-byte `r ‖ s` whose S is at most n/2 (what CometBFT accepts). */
export function isLowS(signature: Uint8Array): boolean {
  if (signature.length !== SIG_LEN) return false;
  return bigintFromBytes(signature.subarray(32)) <= HALF_N;
}

/**
 * Returns the low-S form of a 64-byte secp256k1 `r ‖ s`: S is replaced with n - S when S > n/2,
 * otherwise a copy is returned. Both forms verify under plain ECDSA; CometBFT accepts only the
 * low one. Throws KeyFormatError for a wrong length or S ≥ n (not a signature scalar at all).
 */
export function normalizeLowS(signature: Uint8Array): Uint8Array {
  if (signature.length !== SIG_LEN) {
    throw new KeyFormatError(`secp256k1 signature must be 64 bytes (r ‖ s), got ${signature.length}`);
  }
  const s = bigintFromBytes(signature.subarray(32));
  if (s >= N) throw new KeyFormatError('secp256k1 signature S is not below the group order');
  const out = signature.slice();
  if (s > HALF_N) out.set(bytes32(N - s), 32);
  return out;
}
