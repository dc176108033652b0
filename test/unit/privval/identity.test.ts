import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ed25519 } from '@noble/curves/ed25519.js';
import { loadIdentity, loadOrCreateIdentity, nodeIdFromPubKey } from '../../../src/privval/identity.ts';

const keyVectors = JSON.parse(
  await readFile(new URL('../../vectors/upstream/crypto-keys.json', import.meta.url), 'utf8'),
) as {
  ed25519_it_s_a_secret: { seed_sha256_of_secret: string; pubkey: string; address: string };
};

let root: string;
let n = 0;
const freshHome = () => join(root, `home-${n++}`);

async function writeKeyFile(home: string, doc: unknown, mode = 0o600): Promise<void> {
  await loadOrCreateIdentity(home); // creates the directory with the right modes
  const path = join(home, 'node_key.json');
  await writeFile(path, typeof doc === 'string' ? doc : JSON.stringify(doc));
  await chmod(path, mode);
}

describe('transport identity (node_key.json)', () => {
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'cometkms-identity-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('creates node_key.json with mode 0600 in CometBFT format and reloads the same key', async () => {
    const home = freshHome();
    const created = await loadOrCreateIdentity(home);
    const path = join(home, 'node_key.json');
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.deepEqual(await readdir(home), ['node_key.json'], 'no temp file left behind');

    const doc = JSON.parse(await readFile(path, 'utf8'));
    assert.deepEqual(Object.keys(doc), ['priv_key']);
    assert.equal(doc.priv_key.type, 'tendermint/PrivKeyEd25519');
    const raw = Buffer.from(doc.priv_key.value, 'base64');
    assert.equal(raw.length, 64);
    assert.deepEqual(new Uint8Array(raw.subarray(0, 32)), created.seed);
    assert.deepEqual(new Uint8Array(raw.subarray(32)), created.publicKey);
    assert.deepEqual(created.publicKey, ed25519.getPublicKey(created.seed));

    const again = await loadOrCreateIdentity(home);
    assert.deepEqual(again, created);
    assert.deepEqual(await loadIdentity(home), created);
  });

  it('derives the node id as hex(sha256(pub)[0:20])', async () => {
    const id = await loadOrCreateIdentity(freshHome());
    assert.match(id.nodeId, /^[0-9a-f]{40}$/);
    const expected = createHash('sha256').update(id.publicKey).digest().subarray(0, 20).toString('hex');
    assert.equal(id.nodeId, expected);
    // Same rule as the upstream ed25519 address vector.
    const v = keyVectors.ed25519_it_s_a_secret;
    assert.equal(nodeIdFromPubKey(Buffer.from(v.pubkey, 'hex')), v.address);
    assert.throws(() => nodeIdFromPubKey(new Uint8Array(33)), /32-byte/);
  });

  it('reads a file written in the upstream format', async () => {
    const v = keyVectors.ed25519_it_s_a_secret;
    const home = freshHome();
    const value = Buffer.concat([Buffer.from(v.seed_sha256_of_secret, 'hex'), Buffer.from(v.pubkey, 'hex')]);
    await writeKeyFile(home, {
      priv_key: { type: 'tendermint/PrivKeyEd25519', value: value.toString('base64') },
    });
    const id = await loadIdentity(home);
    assert.equal(Buffer.from(id.publicKey).toString('hex'), v.pubkey);
    assert.equal(id.nodeId, v.address);
  });

  it('loadIdentity tells the operator to run cometkms init when the file is missing', async () => {
    await assert.rejects(loadIdentity(freshHome()), /does not exist; run `cometkms init`/);
  });

  it('rejects a key file readable by group or others', async () => {
    const home = freshHome();
    await loadOrCreateIdentity(home);
    await chmod(join(home, 'node_key.json'), 0o640);
    await assert.rejects(loadIdentity(home), /permissions 0640.*chmod 600/);
    await assert.rejects(loadOrCreateIdentity(home), /chmod 600/);
  });

  const seed = new Uint8Array(32).fill(9);
  const pub = ed25519.getPublicKey(seed);
  const good = Buffer.concat([seed, pub]).toString('base64');
  const badFiles: Array<[string, unknown, RegExp]> = [
    ['invalid JSON', '{"priv_key":', /not valid JSON/],
    ['missing priv_key', {}, /priv_key.type must be/],
    ['wrong key type', { priv_key: { type: 'tendermint/PrivKeySecp256k1', value: good } }, /priv_key.type/],
    ['non-string value', { priv_key: { type: 'tendermint/PrivKeyEd25519', value: 5 } }, /base64 string/],
    [
      'wrong length (seed only)',
      { priv_key: { type: 'tendermint/PrivKeyEd25519', value: Buffer.from(seed).toString('base64') } },
      /base64 of 64 bytes/,
    ],
    ['not base64', { priv_key: { type: 'tendermint/PrivKeyEd25519', value: `${good.slice(1)}!` } }, /base64/],
    [
      'mismatched halves',
      {
        priv_key: {
          type: 'tendermint/PrivKeyEd25519',
          value: Buffer.concat([seed, ed25519.getPublicKey(new Uint8Array(32).fill(8))]).toString('base64'),
        },
      },
      /does not match the seed/,
    ],
  ];
  for (const [name, doc, pattern] of badFiles) {
    it(`rejects a key file with ${name} (and does not overwrite it)`, async () => {
      const home = freshHome();
      await writeKeyFile(home, doc);
      const before = await readFile(join(home, 'node_key.json'), 'utf8');
      await assert.rejects(loadIdentity(home), pattern);
      await assert.rejects(loadOrCreateIdentity(home), pattern);
      assert.equal(await readFile(join(home, 'node_key.json'), 'utf8'), before);
    });
  }

  it('accepts the well-formed control file used by the rejection cases', async () => {
    const home = freshHome();
    await writeKeyFile(home, { priv_key: { type: 'tendermint/PrivKeyEd25519', value: good } });
    assert.deepEqual((await loadIdentity(home)).publicKey, pub);
  });
});
