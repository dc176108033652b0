/**
 * CometBFT's FilePV files (spec §7.4, §7.5): `priv_validator_key.json` and
 * `priv_validator_state.json`, read strictly and written byte-for-byte as CometBFT writes them
 * (`cmtjson.MarshalIndent(v, "", "  ")`, no trailing newline).
 */

import { bytesEqual } from './bytes.ts';
import {
  fromBase64,
  fromHex,
  KeyFormatError,
  pubKeyFromJson,
  pubKeyToJson,
  publicKeyFromPrivate,
  toBase64,
  toHex,
  toHexUpper,
  validatorAddress,
} from './keys.ts';
import type { KeyType, PubKey } from './types.ts';

/** A validator key as held in `priv_validator_key.json`. */
export interface PrivValidatorKey {
  address: Uint8Array;
  pubKey: PubKey;
  /** 32-byte ed25519 seed or secp256k1 scalar */
  privateKey: Uint8Array;
}

/** The last-sign state of `priv_validator_state.json`. Empty arrays mean "absent". */
export interface PrivValidatorState {
  height: bigint;
  round: number;
  step: number;
  signature: Uint8Array;
  signBytes: Uint8Array;
}

const PRIVKEY_JSON_TYPE: Record<KeyType, string> = {
  ed25519: 'tendermint/PrivKeyEd25519',
  secp256k1: 'tendermint/PrivKeySecp256k1',
};

const INT64_MAX = (1n << 63n) - 1n;
const INT32_MAX = 2 ** 31 - 1;
const MAX_STEP = 3;

function parseJsonObject(json: string, file: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch (e) {
    throw new KeyFormatError(`${file}: malformed JSON: ${(e as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new KeyFormatError(`${file}: top level must be a JSON object`);
  }
  return v as Record<string, unknown>;
}

/** Decodes `priv_key` into the key type and the 32-byte private key, checking its layout. */
function parsePrivKeyField(v: unknown): { type: KeyType; privateKey: Uint8Array } {
  const file = 'priv_validator_key.json';
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new KeyFormatError(`${file}: "priv_key" must be an object {"type", "value"}`);
  }
  const { type, value } = v as Record<string, unknown>;
  const keyType = (Object.keys(PRIVKEY_JSON_TYPE) as KeyType[]).find((k) => PRIVKEY_JSON_TYPE[k] === type);
  if (keyType === undefined) {
    throw new KeyFormatError(
      `${file}: unsupported "priv_key" type ${JSON.stringify(type)}; expected ${PRIVKEY_JSON_TYPE.ed25519} or ${PRIVKEY_JSON_TYPE.secp256k1}`,
    );
  }
  if (typeof value !== 'string')
    throw new KeyFormatError(`${file}: "priv_key.value" must be a base64 string`);
  let raw: Uint8Array;
  try {
    raw = fromBase64(value);
  } catch (e) {
    throw new KeyFormatError(`${file}: "priv_key.value": ${(e as Error).message}`);
  }
  if (keyType === 'secp256k1') {
    if (raw.length !== 32) {
      throw new KeyFormatError(`${file}: secp256k1 "priv_key.value" must be 32 bytes, got ${raw.length}`);
    }
    return { type: keyType, privateKey: raw };
  }
  // Go's ed25519.PrivateKey is seed ‖ public key. A 32-byte value is a bare seed in some
  // other tool's layout; guessing would risk signing with a key the operator did not mean.
  if (raw.length !== 64) {
    throw new KeyFormatError(
      `${file}: ed25519 "priv_key.value" must be 64 bytes (seed ‖ public key), got ${raw.length}`,
    );
  }
  const seed = raw.slice(0, 32);
  const statedPub = raw.slice(32);
  const derived = publicKeyFromPrivate('ed25519', seed).bytes;
  // Go derives signatures from the seed but puts the stored half into them, so a mismatched
  // half would produce signatures under a key nobody expects. Refuse such a file.
  if (!bytesEqual(derived, statedPub)) {
    throw new KeyFormatError(
      `${file}: "priv_key.value" is inconsistent: its public half ${toHex(statedPub)} is not the key derived from its seed (${toHex(derived)})`,
    );
  }
  return { type: keyType, privateKey: seed };
}

/**
 * Parses `priv_validator_key.json`. The public key and address are derived from `priv_key`; the
 * file's `pub_key` and `address`, when present, must agree with them (CometBFT silently ignores
 * them; a disagreement means the file was edited or mixed up, so we refuse it).
 * Throws KeyFormatError explaining any problem.
 */
export function parsePrivValidatorKey(json: string): PrivValidatorKey {
  const file = 'priv_validator_key.json';
  const obj = parseJsonObject(json, file);
  if (!('priv_key' in obj)) throw new KeyFormatError(`${file}: missing "priv_key"`);
  const { type, privateKey } = parsePrivKeyField(obj['priv_key']);
  const pubKey = publicKeyFromPrivate(type, privateKey);
  const address = validatorAddress(pubKey);

  if (obj['pub_key'] !== undefined) {
    let filePub: PubKey;
    try {
      filePub = pubKeyFromJson(obj['pub_key']);
    } catch (e) {
      throw new KeyFormatError(`${file}: "pub_key": ${(e as Error).message}`);
    }
    if (filePub.type !== pubKey.type || !bytesEqual(filePub.bytes, pubKey.bytes)) {
      throw new KeyFormatError(
        `${file}: "pub_key" (${filePub.type} ${toHex(filePub.bytes)}) does not match the key derived from "priv_key" (${pubKey.type} ${toHex(pubKey.bytes)})`,
      );
    }
  }
  if (obj['address'] !== undefined) {
    const a = obj['address'];
    if (typeof a !== 'string') throw new KeyFormatError(`${file}: "address" must be a hex string`);
    let fileAddr: Uint8Array;
    try {
      fileAddr = fromHex(a);
    } catch (e) {
      throw new KeyFormatError(`${file}: "address": ${(e as Error).message}`);
    }
    if (!bytesEqual(fileAddr, address)) {
      throw new KeyFormatError(
        `${file}: "address" ${a} does not match the address derived from "priv_key" (${toHexUpper(address)})`,
      );
    }
  }
  return { address, pubKey, privateKey };
}

/**
 * Renders `priv_validator_key.json` exactly as CometBFT writes it for this private key
 * (32-byte ed25519 seed or secp256k1 scalar). Throws KeyFormatError for an invalid key.
 */
export function formatPrivValidatorKey(type: KeyType, privateKey: Uint8Array): string {
  const pubKey = publicKeyFromPrivate(type, privateKey);
  const stored = type === 'ed25519' ? new Uint8Array([...privateKey, ...pubKey.bytes]) : privateKey;
  const doc = {
    address: toHexUpper(validatorAddress(pubKey)),
    pub_key: pubKeyToJson(pubKey),
    priv_key: { type: PRIVKEY_JSON_TYPE[type], value: toBase64(stored) },
  };
  return JSON.stringify(doc, null, 2);
}

function parseHeight(v: unknown, file: string): bigint {
  let h: bigint;
  if (typeof v === 'string') {
    // CometBFT writes int64 as a decimal string. Only plain digits are accepted: no sign, no
    // spaces, no exponent.
    if (!/^[0-9]+$/.test(v))
      throw new KeyFormatError(`${file}: "height" ${JSON.stringify(v)} is not a decimal integer`);
    h = BigInt(v);
  } else if (typeof v === 'number') {
    // A JSON number above 2^53 has already been rounded by JSON.parse; accepting it could move
    // the double-sign guard to a height that was never signed.
    if (!Number.isSafeInteger(v)) {
      throw new KeyFormatError(
        `${file}: "height" ${v} is not an exactly representable integer; write it as a string`,
      );
    }
    h = BigInt(v);
  } else {
    throw new KeyFormatError(`${file}: "height" must be a string (or number), got ${typeof v}`);
  }
  if (h < 0n || h > INT64_MAX)
    throw new KeyFormatError(`${file}: "height" ${h} is out of range 0..${INT64_MAX}`);
  return h;
}

function parseIntField(v: unknown, name: string, max: number, file: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw new KeyFormatError(`${file}: "${name}" must be an integer number, got ${JSON.stringify(v)}`);
  }
  if (v < 0 || v > max) throw new KeyFormatError(`${file}: "${name}" ${v} is out of range 0..${max}`);
  return v;
}

function parseBytesField(
  v: unknown,
  name: string,
  decode: (s: string) => Uint8Array,
  file: string,
): Uint8Array {
  // Go decodes a missing field and null alike into an empty slice.
  if (v === undefined || v === null) return new Uint8Array(0);
  if (typeof v !== 'string') throw new KeyFormatError(`${file}: "${name}" must be a string`);
  try {
    return decode(v);
  } catch (e) {
    throw new KeyFormatError(`${file}: "${name}": ${(e as Error).message}`);
  }
}

/**
 * Parses `priv_validator_state.json`. `height` is an int64 decimal string (a safe-integer number
 * is also accepted), `round` an int32 ≥ 0, `step` 0..3, `signature` optional base64, `signbytes`
 * optional hex of either case. Unknown fields are ignored as Go does. Throws KeyFormatError
 * naming the offending field.
 */
export function parsePrivValidatorState(json: string): PrivValidatorState {
  const file = 'priv_validator_state.json';
  const obj = parseJsonObject(json, file);
  for (const f of ['height', 'round', 'step']) {
    if (obj[f] === undefined) throw new KeyFormatError(`${file}: missing "${f}"`);
  }
  return {
    height: parseHeight(obj['height'], file),
    round: parseIntField(obj['round'], 'round', INT32_MAX, file),
    step: parseIntField(obj['step'], 'step', MAX_STEP, file),
    signature: parseBytesField(obj['signature'], 'signature', fromBase64, file),
    signBytes: parseBytesField(obj['signbytes'], 'signbytes', fromHex, file),
  };
}

/**
 * Renders `priv_validator_state.json` exactly as CometBFT writes it: 2-space indent, height as
 * a string, uppercase hex sign bytes, and `signature`/`signbytes` omitted when empty. Throws
 * KeyFormatError for a state that parsePrivValidatorState would reject, so that a written file
 * can always be read back.
 */
export function formatPrivValidatorState(state: PrivValidatorState): string {
  const file = 'priv_validator_state.json';
  if (state.height < 0n || state.height > INT64_MAX) {
    throw new KeyFormatError(`${file}: "height" ${state.height} is out of range 0..${INT64_MAX}`);
  }
  parseIntField(state.round, 'round', INT32_MAX, file);
  parseIntField(state.step, 'step', MAX_STEP, file);
  const doc: Record<string, string | number> = {
    height: state.height.toString(),
    round: state.round,
    step: state.step,
  };
  if (state.signature.length > 0) doc['signature'] = toBase64(state.signature);
  if (state.signBytes.length > 0) doc['signbytes'] = toHexUpper(state.signBytes);
  return JSON.stringify(doc, null, 2);
}
