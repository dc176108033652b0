/**
 * Validator key formats (spec §9): key checks, public-key derivation, addresses, the Amino JSON
 * and Amino binary forms of public keys, Cosmos bech32 forms, and the strict hex/base64 codecs
 * the key and state files use.
 */

import { ed25519 } from '@noble/curves/ed25519.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { ripemd160 } from '@noble/hashes/legacy.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bech32Encode } from './bech32.ts';
import { KeyFormatError } from './errors.ts';
import type { KeyType, PubKey } from './types.ts';

export { KeyFormatError };

const ED25519_PUB_LEN = 32;
const SECP256K1_PUB_LEN = 33;
const PRIV_LEN = 32;

/** Amino JSON type names of public keys. */
const PUBKEY_JSON_TYPE = {
  ed25519: 'tendermint/PubKeyEd25519',
  secp256k1: 'tendermint/PubKeySecp256k1',
} as const;

/** Legacy Amino binary prefixes: 4-byte type prefix then the key's length byte. */
const AMINO_PREFIX: Record<KeyType, Uint8Array> = {
  ed25519: Uint8Array.of(0x16, 0x24, 0xde, 0x64, 0x20),
  secp256k1: Uint8Array.of(0xeb, 0x5a, 0xe9, 0x87, 0x21),
};

/** Lowercase hex. */
export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

/** Uppercase hex, as CometBFT writes addresses and sign bytes into its files. */
export function toHexUpper(b: Uint8Array): string {
  return toHex(b).toUpperCase();
}

/** Parses hex of either case; throws KeyFormatError on odd length or a non-hex character. */
export function fromHex(s: string): Uint8Array {
  if (s.length % 2 !== 0) throw new KeyFormatError(`hex string has odd length ${s.length}`);
  if (!/^[0-9a-fA-F]*$/.test(s)) throw new KeyFormatError('hex string contains a non-hex character');
  return new Uint8Array(Buffer.from(s, 'hex'));
}

/** Standard, padded base64. */
export function toBase64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
}

const BASE64_STD = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Parses standard padded base64 strictly: no whitespace, no URL alphabet, correct padding and
 * zero unused bits. Node's own decoder silently skips bad characters, which would let a
 * corrupted key file decode to a different key, so the input is validated first.
 */
export function fromBase64(s: string): Uint8Array {
  if (!BASE64_STD.test(s)) throw new KeyFormatError('not valid standard padded base64');
  const bytes = new Uint8Array(Buffer.from(s, 'base64'));
  // Non-zero unused bits in the last character would make two strings decode to one value.
  if (toBase64(bytes) !== s) throw new KeyFormatError('base64 has non-zero padding bits');
  return bytes;
}

function describe(b: Uint8Array): string {
  return `${b.length} bytes`;
}

/**
 * Checks that a public key has the right form: ed25519 32 bytes; secp256k1 33 bytes encoding a
 * point on the curve in compressed SEC1 form. Throws KeyFormatError otherwise.
 */
export function checkPubKey(pubKey: PubKey): void {
  switch (pubKey.type) {
    case 'ed25519':
      if (pubKey.bytes.length !== ED25519_PUB_LEN) {
        throw new KeyFormatError(`ed25519 public key must be 32 bytes, got ${describe(pubKey.bytes)}`);
      }
      return;
    case 'secp256k1': {
      const b = pubKey.bytes;
      if (b.length !== SECP256K1_PUB_LEN || (b[0] !== 0x02 && b[0] !== 0x03)) {
        throw new KeyFormatError(
          `secp256k1 public key must be 33 bytes of compressed SEC1 (02/03 ‖ X), got ${describe(b)}`,
        );
      }
      try {
        secp256k1.Point.fromBytes(b).assertValidity();
      } catch {
        throw new KeyFormatError('secp256k1 public key is not a point on the curve');
      }
      return;
    }
    default:
      throw new KeyFormatError(`unknown key type ${JSON.stringify((pubKey as { type: unknown }).type)}`);
  }
}

/**
 * Derives the public key from a private key: a 32-byte ed25519 seed or a 32-byte secp256k1
 * scalar in 1..n-1. Throws KeyFormatError for a wrong length or an invalid scalar.
 */
export function publicKeyFromPrivate(type: KeyType, priv: Uint8Array): PubKey {
  if (priv.length !== PRIV_LEN) {
    throw new KeyFormatError(`${type} private key must be 32 bytes, got ${describe(priv)}`);
  }
  switch (type) {
    case 'ed25519':
      return { type, bytes: ed25519.getPublicKey(priv) };
    case 'secp256k1':
      if (!secp256k1.utils.isValidSecretKey(priv)) {
        throw new KeyFormatError('secp256k1 private key is not a scalar in 1..n-1');
      }
      return { type, bytes: secp256k1.getPublicKey(priv, true) };
    default:
      throw new KeyFormatError(`unknown key type ${JSON.stringify(type as unknown)}`);
  }
}

/**
 * The 20-byte validator address: ed25519 `SHA-256(pub)[0:20]`, secp256k1
 * `RIPEMD-160(SHA-256(pub))`. The key is checked first (KeyFormatError).
 */
export function validatorAddress(pubKey: PubKey): Uint8Array {
  checkPubKey(pubKey);
  const h = sha256(pubKey.bytes);
  return pubKey.type === 'ed25519' ? h.slice(0, 20) : ripemd160(h);
}

/** The Amino JSON form `{type, value}` of a public key (value = base64). */
export function pubKeyToJson(pubKey: PubKey): {
  type: 'tendermint/PubKeyEd25519' | 'tendermint/PubKeySecp256k1';
  value: string;
} {
  checkPubKey(pubKey);
  return { type: PUBKEY_JSON_TYPE[pubKey.type], value: toBase64(pubKey.bytes) };
}

/** Parses the Amino JSON form of a public key and checks the key. Throws KeyFormatError. */
export function pubKeyFromJson(json: unknown): PubKey {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new KeyFormatError('public key must be a JSON object {"type", "value"}');
  }
  const { type, value } = json as Record<string, unknown>;
  let keyType: KeyType;
  if (type === PUBKEY_JSON_TYPE.ed25519) keyType = 'ed25519';
  else if (type === PUBKEY_JSON_TYPE.secp256k1) keyType = 'secp256k1';
  else {
    throw new KeyFormatError(
      `unsupported public key type ${JSON.stringify(type)}; expected ${PUBKEY_JSON_TYPE.ed25519} or ${PUBKEY_JSON_TYPE.secp256k1}`,
    );
  }
  if (typeof value !== 'string') throw new KeyFormatError('public key "value" must be a base64 string');
  let bytes: Uint8Array;
  try {
    bytes = fromBase64(value);
  } catch (e) {
    throw new KeyFormatError(`public key "value": ${(e as Error).message}`);
  }
  const pubKey: PubKey = { type: keyType, bytes };
  checkPubKey(pubKey);
  return pubKey;
}

/** Cosmos SDK `Any` type URLs of consensus public keys. */
const COSMOS_PUBKEY_TYPE = {
  ed25519: '/cosmos.crypto.ed25519.PubKey',
  secp256k1: '/cosmos.crypto.secp256k1.PubKey',
} as const;

/**
 * The Cosmos SDK JSON form of a consensus public key, `{"@type", "key"}` (key = base64; for
 * secp256k1 the 33-byte compressed point), as `tx staking create-validator --pubkey` takes it.
 */
export function cosmosPubKeyJson(pubKey: PubKey): {
  '@type': '/cosmos.crypto.ed25519.PubKey' | '/cosmos.crypto.secp256k1.PubKey';
  key: string;
} {
  checkPubKey(pubKey);
  return { '@type': COSMOS_PUBKEY_TYPE[pubKey.type], key: toBase64(pubKey.bytes) };
}

/** The legacy Amino binary encoding of a public key: type prefix, length byte, key bytes. */
export function aminoPubKeyBytes(pubKey: PubKey): Uint8Array {
  checkPubKey(pubKey);
  const prefix = AMINO_PREFIX[pubKey.type];
  const out = new Uint8Array(prefix.length + pubKey.bytes.length);
  out.set(prefix, 0);
  out.set(pubKey.bytes, prefix.length);
  return out;
}

/** The Cosmos SDK consensus address, bech32 of the validator address (e.g. `cosmosvalcons1…`). */
export function consensusAddressBech32(pubKey: PubKey, prefix = 'cosmosvalcons'): string {
  return bech32Encode(prefix, validatorAddress(pubKey));
}

/** The Cosmos SDK consensus public key, bech32 of the Amino binary key (e.g. `cosmosvalconspub1…`). */
export function consensusPubKeyBech32(pubKey: PubKey, prefix = 'cosmosvalconspub'): string {
  return bech32Encode(prefix, aminoPubKeyBytes(pubKey));
}
