/**
 * The KMS node's persistent SecretConnection identity: an ed25519 key kept in
 * `<home>/node_key.json` in CometBFT's node_key.json format. It only authenticates the
 * transport (the node does not check it, spec §2.4); it is NOT the validator key, which
 * lives in the HSM.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ed25519 } from '@noble/curves/ed25519.js';
import { sha256 } from '@noble/hashes/sha2.js';

/** The transport identity key pair and its CometBFT-style node id. */
export interface TransportIdentity {
  /** 32-byte ed25519 seed (the private key). */
  seed: Uint8Array;
  /** 32-byte ed25519 public key. */
  publicKey: Uint8Array;
  /** Lowercase hex of sha256(publicKey)[0:20], as CometBFT node ids. */
  nodeId: string;
}

const FILE_NAME = 'node_key.json';
const KEY_TYPE = 'tendermint/PrivKeyEd25519';

/** CometBFT node id for an ed25519 public key: lowercase hex of sha256(pub)[0:20]. */
export function nodeIdFromPubKey(pub: Uint8Array): string {
  if (pub.length !== 32) throw new Error(`node id: expected a 32-byte ed25519 public key, got ${pub.length}`);
  return Buffer.from(sha256(pub).subarray(0, 20)).toString('hex');
}

/**
 * Loads `<home>/node_key.json`, or creates it with a fresh random key if it does not exist.
 * Used by `cometkms init`.
 */
export async function loadOrCreateIdentity(home: string): Promise<TransportIdentity> {
  const path = join(home, FILE_NAME);
  try {
    return await readIdentityFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const seed = new Uint8Array(randomBytes(32));
  const identity = identityFromSeed(seed);
  await writeIdentityFile(home, path, identity);
  return identity;
}

/** Loads `<home>/node_key.json`; fails with an operator hint if it has not been created. */
export async function loadIdentity(home: string): Promise<TransportIdentity> {
  const path = join(home, FILE_NAME);
  try {
    return await readIdentityFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`transport identity ${path} does not exist; run \`cometkms init\` to create it`);
    }
    throw err;
  }
}

function identityFromSeed(seed: Uint8Array): TransportIdentity {
  const publicKey = ed25519.getPublicKey(seed);
  return { seed, publicKey, nodeId: nodeIdFromPubKey(publicKey) };
}

async function readIdentityFile(path: string): Promise<TransportIdentity> {
  const info = await stat(path);
  // A private key readable by others must not be used silently.
  if ((info.mode & 0o077) !== 0) {
    const mode = (info.mode & 0o777).toString(8).padStart(4, '0');
    throw new Error(`${path} has permissions ${mode}; it holds a private key: run \`chmod 600 ${path}\``);
  }
  const text = await readFile(path, 'utf8');
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error(`${path}: not valid JSON`);
  }
  const privKey = (doc as { priv_key?: { type?: unknown; value?: unknown } } | null)?.priv_key;
  if (privKey?.type !== KEY_TYPE) {
    throw new Error(`${path}: priv_key.type must be "${KEY_TYPE}"`);
  }
  if (typeof privKey.value !== 'string') throw new Error(`${path}: priv_key.value must be a base64 string`);
  const raw = Buffer.from(privKey.value, 'base64');
  // Node's decoder skips invalid characters; a round trip proves the text was clean base64.
  if (raw.length !== 64 || raw.toString('base64') !== privKey.value) {
    throw new Error(`${path}: priv_key.value must be base64 of 64 bytes (seed ‖ public key)`);
  }
  const identity = identityFromSeed(new Uint8Array(raw.subarray(0, 32)));
  if (!Buffer.from(identity.publicKey).equals(raw.subarray(32))) {
    throw new Error(`${path}: public key half does not match the seed`);
  }
  return identity;
}

/** Atomic create: write a 0600 temp file, fsync, rename into place, fsync the directory. */
async function writeIdentityFile(home: string, path: string, identity: TransportIdentity): Promise<void> {
  await mkdir(home, { recursive: true, mode: 0o700 });
  const value = Buffer.concat([identity.seed, identity.publicKey]).toString('base64');
  const text = JSON.stringify({ priv_key: { type: KEY_TYPE, value } });
  const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  try {
    const file = await open(tmp, 'wx', 0o600);
    try {
      await file.writeFile(text);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const dir = await open(home, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
