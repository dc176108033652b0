import { secp256k1 } from '@noble/curves/secp256k1.js';
import { bytesEqual } from '../cometbft/bytes.ts';
import type { KeyType, PubKey } from '../cometbft/types.ts';
import { HsmError } from './errors.ts';

/**
 * CKA_EC_PARAMS encodings. Ed25519 is named either by its OID 1.3.101.112 (PKCS#11 v3.0) or by
 * the PrintableString "edwards25519" (the older RFC 8032 draft convention some HSMs still
 * require); which one a token wants is part of its profile. secp256k1 is OID 1.3.132.0.10.
 */
export const EC_PARAMS = {
  ed25519Oid: Uint8Array.from([0x06, 0x03, 0x2b, 0x65, 0x70]),
  ed25519Printable: Uint8Array.from([
    0x13, 0x0c, 0x65, 0x64, 0x77, 0x61, 0x72, 0x64, 0x73, 0x32, 0x35, 0x35, 0x31, 0x39,
  ]),
  secp256k1Oid: Uint8Array.from([0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a]),
} as const;

/** The key type that CKA_EC_PARAMS names, or undefined for any other curve. */
export function keyTypeOfEcParams(params: Uint8Array): KeyType | undefined {
  if (bytesEqual(params, EC_PARAMS.ed25519Oid) || bytesEqual(params, EC_PARAMS.ed25519Printable)) {
    return 'ed25519';
  }
  if (bytesEqual(params, EC_PARAMS.secp256k1Oid)) return 'secp256k1';
  return undefined;
}

/** DER OCTET STRING around `bytes` (CKA_EC_POINT is specified as one). */
export function derOctetString(bytes: Uint8Array): Uint8Array {
  const n = bytes.length;
  const header = n < 0x80 ? [0x04, n] : n < 0x100 ? [0x04, 0x81, n] : [0x04, 0x82, (n >> 8) & 0xff, n & 0xff];
  const out = new Uint8Array(header.length + n);
  out.set(header, 0);
  out.set(bytes, header.length);
  return out;
}

/** The content of a DER OCTET STRING, or undefined when `der` is not exactly one. */
function unwrapOctetString(der: Uint8Array): Uint8Array | undefined {
  if (der.length < 2 || der[0] !== 0x04) return undefined;
  const first = der[1] as number;
  let length: number;
  let offset: number;
  if (first < 0x80) {
    length = first;
    offset = 2;
  } else if (first === 0x81 && der.length >= 3) {
    length = der[2] as number;
    offset = 3;
  } else {
    return undefined;
  }
  return der.length === offset + length ? der.subarray(offset) : undefined;
}

/**
 * Decodes CKA_EC_POINT into CometBFT's public key form: Ed25519 → the 32 raw bytes; secp256k1
 * → 33-byte compressed SEC1. The DER OCTET STRING header is stripped; a bare point (some HSMs
 * return one) is accepted only when its length alone makes it unambiguous.
 */
export function pubKeyFromEcPoint(type: KeyType, ecPoint: Uint8Array): PubKey {
  if (type === 'ed25519') {
    const raw = ecPoint.length === 32 ? ecPoint : unwrapOctetString(ecPoint);
    if (raw?.length !== 32) {
      throw new HsmError(`unexpected CKA_EC_POINT for an ed25519 key (${ecPoint.length} bytes)`);
    }
    return { type, bytes: Uint8Array.from(raw) };
  }
  const raw = ecPoint.length === 65 || ecPoint.length === 33 ? ecPoint : unwrapOctetString(ecPoint);
  if (raw === undefined || (raw.length !== 65 && raw.length !== 33)) {
    throw new HsmError(`unexpected CKA_EC_POINT for a secp256k1 key (${ecPoint.length} bytes)`);
  }
  try {
    return { type, bytes: secp256k1.Point.fromBytes(raw).toBytes(true) };
  } catch (err) {
    throw new HsmError('CKA_EC_POINT of a secp256k1 key is not a point on the curve', { cause: err });
  }
}

/**
 * The CKA_EC_POINT value to store with an imported public key: DER OCTET STRING of the raw
 * Ed25519 key, or of the uncompressed secp256k1 point (what PKCS#11 tokens produce themselves).
 */
export function ecPointForImport(pubKey: PubKey): Uint8Array {
  if (pubKey.type === 'ed25519') return derOctetString(pubKey.bytes);
  return derOctetString(secp256k1.Point.fromBytes(pubKey.bytes).toBytes(false));
}
