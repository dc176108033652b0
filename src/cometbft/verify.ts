/**
 * Signature verification with CometBFT's rules (spec §9), and the low-S helpers an HSM backend
 * needs because PKCS#11 ECDSA returns either S.
 */

import { ed25519 } from '@noble/curves/ed25519.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { KeyFormatError } from './keys.ts';
import type { PubKey } from './types.ts';

const SIG_LEN = 64;
const N = secp256k1.Point.CURVE().n;
const HALF_N = N >> 1n;

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
 * - ed25519: RFC 8032 with ZIP-215 acceptance rules, as CometBFT v0.38+ (curve25519-voi).
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
        return ed25519.verify(signature, message, pubKey.bytes, { zip215: true });
      case 'secp256k1':
        if (pubKey.bytes.length !== 33) return false;
        return secp256k1.verify(signature, message, pubKey.bytes, {
          prehash: true,
          lowS: true,
          format: 'compact',
        });
      default:
        return false;
    }
  } catch {
    // noble throws on encodings it cannot parse (off-curve points, scalars ≥ n); for a
    // verifier those are just invalid signatures.
    return false;
  }
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
