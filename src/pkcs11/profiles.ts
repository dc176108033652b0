import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pkcs11js from 'pkcs11js';
import { parse } from 'smol-toml';
import { bytesEqual } from '../cometbft/bytes.ts';
import type { KeyType } from '../cometbft/types.ts';
import { CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EDDSA } from './constants.ts';
import { EC_PARAMS } from './ec.ts';
import { HsmError } from './errors.ts';

/** How one HSM family handles one key type. */
export interface KeyTypeSupport {
  /** CKA_EC_PARAMS written when generating or importing a key of this type */
  ecParams: Uint8Array;
  keyGenMechanism: number;
  signMechanism: number;
  /** whether the HSM accepts an imported private key of this type (C_CreateObject) */
  importable: boolean;
}

/** One HSM family's profile, loaded from hsm/<name>.toml. */
export interface HsmProfile {
  name: string;
  description: string;
  /** true only when this repository's integration tests run against this HSM */
  tested: boolean;
  /** plain statement of what was and was not verified */
  status: string;
  defaultModule: string;
  /** what the PIN looks like for this HSM (some combine a key id or user name with a password) */
  pinFormat: string;
  /** whether to restrict keys with CKA_ALLOWED_MECHANISMS (some modules reject the attribute) */
  setAllowedMechanisms: boolean;
  keyTypes: Partial<Record<KeyType, KeyTypeSupport>>;
  /** known limits and quirks, one sentence each */
  limits: string[];
}

/** Directory of the profiles shipped with CometKMS. */
export const PROFILES_DIR = fileURLToPath(new URL('../../hsm/', import.meta.url));

const KEY_TYPES: readonly KeyType[] = ['ed25519', 'secp256k1'];
const TOP_KEYS = new Set([
  'name',
  'description',
  'tested',
  'status',
  'default_module',
  'pin_format',
  'set_allowed_mechanisms',
  'key_types',
  'limits',
]);
const KEY_TYPE_KEYS = new Set(['ec_params', 'keygen_mechanism', 'sign_mechanism', 'import']);

/** The mechanisms CometKMS implements for each key type (a profile may name only these). */
const MECHANISMS: Record<KeyType, { keygen: Record<string, number>; sign: Record<string, number> }> = {
  ed25519: {
    keygen: { CKM_EC_EDWARDS_KEY_PAIR_GEN },
    sign: { CKM_EDDSA },
  },
  secp256k1: {
    keygen: { CKM_EC_KEY_PAIR_GEN: pkcs11js.CKM_EC_KEY_PAIR_GEN },
    sign: { CKM_ECDSA: pkcs11js.CKM_ECDSA },
  },
};

/** The EC_PARAMS encodings that name each curve. */
const ALLOWED_EC_PARAMS: Record<KeyType, Uint8Array[]> = {
  ed25519: [EC_PARAMS.ed25519Oid, EC_PARAMS.ed25519Printable],
  secp256k1: [EC_PARAMS.secp256k1Oid],
};

/**
 * The defaults used when no profile is given: PKCS#11 v3.0 conventions, which SoftHSM 2.6
 * follows (and it also accepts the printable-string EC_PARAMS).
 */
export const DEFAULT_KEY_TYPES: Record<KeyType, KeyTypeSupport> = {
  ed25519: {
    ecParams: EC_PARAMS.ed25519Oid,
    keyGenMechanism: CKM_EC_EDWARDS_KEY_PAIR_GEN,
    signMechanism: CKM_EDDSA,
    importable: true,
  },
  secp256k1: {
    ecParams: EC_PARAMS.secp256k1Oid,
    keyGenMechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN,
    signMechanism: pkcs11js.CKM_ECDSA,
    importable: true,
  },
};

/** Validates the text of one profile; `source` names it in error messages. */
export function parseProfile(text: string, source: string): HsmProfile {
  const fail = (what: string): never => {
    throw new HsmError(`HSM profile ${source}: ${what}`);
  };
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (err) {
    return fail(`invalid TOML: ${(err as Error).message}`);
  }
  for (const key of Object.keys(doc)) if (!TOP_KEYS.has(key)) fail(`unknown key "${key}"`);
  const str = (key: string): string => {
    const v = doc[key];
    return typeof v === 'string' && v.trim() !== '' ? v : fail(`"${key}" must be a non-empty string`);
  };
  const bool = (v: unknown, key: string): boolean =>
    typeof v === 'boolean' ? v : fail(`"${key}" must be true or false`);

  const limits = doc.limits;
  if (!Array.isArray(limits) || limits.some((l) => typeof l !== 'string'))
    fail('"limits" must be a list of strings');
  const tested = bool(doc.tested, 'tested');
  const status = str('status');
  // An untested profile must say so in words, not only with a boolean an operator may not read.
  if (!tested && !/untested/i.test(status)) fail('"status" of an untested profile must say it is untested');

  const table = doc.key_types;
  if (typeof table !== 'object' || table === null || Array.isArray(table))
    fail('"key_types" must be a table');
  const keyTypes: Partial<Record<KeyType, KeyTypeSupport>> = {};
  for (const [name, raw] of Object.entries(table as Record<string, unknown>)) {
    if (!(KEY_TYPES as string[]).includes(name)) fail(`unknown key type "${name}"`);
    const type = name as KeyType;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
      fail(`key_types.${type} must be a table`);
    const entry = raw as Record<string, unknown>;
    for (const key of Object.keys(entry))
      if (!KEY_TYPE_KEYS.has(key)) fail(`unknown key "key_types.${type}.${key}"`);
    const hex = entry.ec_params;
    if (typeof hex !== 'string' || !/^([0-9a-f]{2})+$/.test(hex))
      fail(`key_types.${type}.ec_params must be lowercase hex`);
    const ecParams = Uint8Array.from(Buffer.from(hex as string, 'hex'));
    if (!ALLOWED_EC_PARAMS[type].some((p) => bytesEqual(p, ecParams))) {
      fail(`key_types.${type}.ec_params ${hex} does not name the ${type} curve`);
    }
    const mechanism = (key: 'keygen_mechanism' | 'sign_mechanism', known: Record<string, number>): number => {
      const v = entry[key];
      const m = typeof v === 'string' ? known[v] : undefined;
      return m ?? fail(`key_types.${type}.${key} must be one of ${Object.keys(known).join(', ')}`);
    };
    keyTypes[type] = {
      ecParams,
      keyGenMechanism: mechanism('keygen_mechanism', MECHANISMS[type].keygen),
      signMechanism: mechanism('sign_mechanism', MECHANISMS[type].sign),
      importable: bool(entry.import, `key_types.${type}.import`),
    };
  }
  if (Object.keys(keyTypes).length === 0) fail('"key_types" lists no key type');

  return {
    name: str('name'),
    description: str('description'),
    tested,
    status,
    defaultModule: str('default_module'),
    pinFormat: str('pin_format'),
    setAllowedMechanisms: bool(doc.set_allowed_mechanisms, 'set_allowed_mechanisms'),
    keyTypes,
    limits: limits as string[],
  };
}

/** Loads hsm/<name>.toml (or from `dir`); the file's `name` must match its file name. */
export async function loadProfile(name: string, dir: string = PROFILES_DIR): Promise<HsmProfile> {
  if (!/^[a-z0-9][a-z0-9-]*$/.test(name)) throw new HsmError(`invalid HSM profile name "${name}"`);
  let text: string;
  try {
    text = await readFile(join(dir, `${name}.toml`), 'utf8');
  } catch {
    const known = await listProfileNames(dir).catch(() => []);
    throw new HsmError(`unknown HSM profile "${name}" (known: ${known.join(', ') || 'none'})`);
  }
  const profile = parseProfile(text, `${name}.toml`);
  if (profile.name !== name) throw new HsmError(`HSM profile ${name}.toml: "name" is "${profile.name}"`);
  return profile;
}

/** Names of the profiles in `dir`, sorted. */
export async function listProfileNames(dir: string = PROFILES_DIR): Promise<string[]> {
  const files = await readdir(dir);
  return files
    .filter((f) => f.endsWith('.toml'))
    .map((f) => f.slice(0, -'.toml'.length))
    .sort();
}
