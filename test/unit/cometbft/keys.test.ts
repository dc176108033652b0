import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { sha256 } from '@noble/hashes/sha2.js';
import { bech32Decode } from '../../../src/cometbft/bech32.ts';
import {
  aminoPubKeyBytes,
  checkPubKey,
  consensusAddressBech32,
  consensusPubKeyBech32,
  cosmosPubKeyJson,
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
} from '../../../src/cometbft/keys.ts';
import type { PubKey } from '../../../src/cometbft/types.ts';

interface CryptoKeys {
  secp256k1_address: { priv: string; pub_compressed: string; address_hex: string };
  ed25519_it_s_a_secret: {
    secret_utf8: string;
    seed_sha256_of_secret: string;
    pubkey: string;
    address: string;
    priv_validator_key_json: { address: string; pub_key: { type: string; value: string } };
    cosmosvalcons: string;
  };
}

const vectors = JSON.parse(
  readFileSync(new URL('../../vectors/upstream/crypto-keys.json', import.meta.url), 'utf8'),
) as CryptoKeys;
const secp = vectors.secp256k1_address;
const ed = vectors.ed25519_it_s_a_secret;

const edPub: PubKey = { type: 'ed25519', bytes: fromHex(ed.pubkey) };
const secpPub: PubKey = { type: 'secp256k1', bytes: fromHex(secp.pub_compressed) };

test('vector: secp256k1 priv -> compressed pub -> ripemd160(sha256) address', () => {
  const pub = publicKeyFromPrivate('secp256k1', fromHex(secp.priv));
  assert.equal(pub.type, 'secp256k1');
  assert.equal(toHex(pub.bytes), secp.pub_compressed);
  assert.equal(toHex(validatorAddress(pub)), secp.address_hex);
});

test('vector: ed25519 seed sha256("it\'s a secret") -> pub -> address, JSON and bech32', () => {
  const seed = sha256(new TextEncoder().encode(ed.secret_utf8));
  assert.equal(toHex(seed), ed.seed_sha256_of_secret);
  const pub = publicKeyFromPrivate('ed25519', seed);
  assert.equal(toHex(pub.bytes), ed.pubkey);
  assert.equal(toHex(validatorAddress(pub)), ed.address);
  assert.equal(toHexUpper(validatorAddress(pub)), ed.priv_validator_key_json.address);
  assert.deepEqual(pubKeyToJson(pub), ed.priv_validator_key_json.pub_key);
  assert.equal(consensusAddressBech32(pub), ed.cosmosvalcons);
});

test('consensusPubKeyBech32 encodes the Amino key under valconspub and decodes back', () => {
  const s = consensusPubKeyBech32(edPub);
  assert.match(s, /^cosmosvalconspub1/);
  const d = bech32Decode(s);
  assert.equal(d.prefix, 'cosmosvalconspub');
  assert.equal(toHex(d.bytes), '1624de6420' + ed.pubkey);
  // The well-known Amino/bech32 rendering of an ed25519 key starts "…valconspub1zcjduepq".
  assert.match(s, /^cosmosvalconspub1zcjduepq/);
  const other = consensusPubKeyBech32(secpPub, 'osmovalconspub');
  assert.equal(toHex(bech32Decode(other).bytes), 'eb5ae98721' + secp.pub_compressed);
  assert.equal(bech32Decode(consensusAddressBech32(secpPub, 'junovalcons')).prefix, 'junovalcons');
});

test('cosmosPubKeyJson: the Cosmos SDK Any form create-validator takes, both key types', () => {
  assert.deepEqual(cosmosPubKeyJson(edPub), {
    '@type': '/cosmos.crypto.ed25519.PubKey',
    key: ed.priv_validator_key_json.pub_key.value,
  });
  const k1 = cosmosPubKeyJson(secpPub);
  assert.equal(k1['@type'], '/cosmos.crypto.secp256k1.PubKey');
  // the 33-byte compressed point, as the SDK stores it
  assert.equal(toHex(fromBase64(k1.key)), secp.pub_compressed);
  assert.throws(() => cosmosPubKeyJson({ type: 'ed25519', bytes: new Uint8Array(31) }), KeyFormatError);
});

test('aminoPubKeyBytes uses the legacy prefixes', () => {
  assert.equal(toHex(aminoPubKeyBytes(edPub)), '1624de6420' + ed.pubkey);
  assert.equal(toHex(aminoPubKeyBytes(secpPub)), 'eb5ae98721' + secp.pub_compressed);
});

test('pubKeyToJson / pubKeyFromJson round-trip both key types', () => {
  for (const pk of [edPub, secpPub]) {
    const j = pubKeyToJson(pk);
    const back = pubKeyFromJson(JSON.parse(JSON.stringify(j)));
    assert.equal(back.type, pk.type);
    assert.deepEqual(back.bytes, pk.bytes);
  }
  assert.equal(pubKeyToJson(secpPub).type, 'tendermint/PubKeySecp256k1');
});

test('pubKeyFromJson rejects bad shapes, types, base64 and keys', () => {
  const good = pubKeyToJson(edPub);
  const bad: unknown[] = [
    null,
    'x',
    [],
    { type: 'tendermint/PubKeySr25519', value: good.value },
    { type: good.type },
    { type: good.type, value: 5 },
    { type: good.type, value: good.value.slice(0, -1) },
    { type: good.type, value: toBase64(new Uint8Array(33)) },
    { type: 'tendermint/PubKeySecp256k1', value: good.value },
  ];
  for (const j of bad) assert.throws(() => pubKeyFromJson(j), KeyFormatError, JSON.stringify(j));
});

test('checkPubKey enforces lengths and secp256k1 curve membership', () => {
  checkPubKey(edPub);
  checkPubKey(secpPub);
  assert.throws(() => checkPubKey({ type: 'ed25519', bytes: new Uint8Array(31) }), /32 bytes/);
  assert.throws(() => checkPubKey({ type: 'ed25519', bytes: new Uint8Array(33) }), KeyFormatError);
  assert.throws(() => checkPubKey({ type: 'secp256k1', bytes: new Uint8Array(32) }), /33 bytes/);
  // uncompressed prefix on a 33-byte value
  const uncompressedTag = secpPub.bytes.slice();
  uncompressedTag[0] = 0x04;
  assert.throws(() => checkPubKey({ type: 'secp256k1', bytes: uncompressedTag }), KeyFormatError);
  // x = 5 is not the x-coordinate of any secp256k1 point (5^3 + 7 = 132 is a non-residue mod p).
  const offCurve = new Uint8Array(33);
  offCurve[0] = 0x02;
  offCurve[32] = 5;
  assert.throws(() => checkPubKey({ type: 'secp256k1', bytes: offCurve }), /not a point/);
  assert.throws(
    () => checkPubKey({ type: 'bls12_381' as 'ed25519', bytes: new Uint8Array(96) }),
    /unknown key type/,
  );
  assert.throws(() => validatorAddress({ type: 'ed25519', bytes: new Uint8Array(5) }), KeyFormatError);
});

test('publicKeyFromPrivate rejects wrong lengths and invalid secp256k1 scalars', () => {
  assert.throws(() => publicKeyFromPrivate('ed25519', new Uint8Array(64)), /32 bytes/);
  assert.throws(() => publicKeyFromPrivate('secp256k1', new Uint8Array(31)), /32 bytes/);
  assert.throws(() => publicKeyFromPrivate('secp256k1', new Uint8Array(32)), /1\.\.n-1/);
  const n = fromHex('fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141');
  assert.throws(() => publicKeyFromPrivate('secp256k1', n), KeyFormatError);
  const nMinus1 = n.slice();
  nMinus1[31] = 0x40;
  assert.equal(publicKeyFromPrivate('secp256k1', nMinus1).bytes.length, 33);
});

test('hex helpers: case, round trip and rejection', () => {
  const b = Uint8Array.of(0x00, 0xab, 0xcd, 0xef, 0x10);
  assert.equal(toHex(b), '00abcdef10');
  assert.equal(toHexUpper(b), '00ABCDEF10');
  assert.deepEqual(fromHex('00ABcdEF10'), b);
  assert.deepEqual(fromHex(''), new Uint8Array(0));
  assert.throws(() => fromHex('abc'), /odd length/);
  assert.throws(() => fromHex('zz'), /non-hex/);
  assert.throws(() => fromHex('0x00'), KeyFormatError);
  assert.throws(() => fromHex(' 00 '), KeyFormatError);
  // a view into a larger buffer is encoded by its own bytes only
  const view = new Uint8Array([1, 2, 3, 4]).subarray(1, 3);
  assert.equal(toHex(view), '0203');
  assert.equal(toBase64(view), 'AgM=');
});

test('base64 helpers: strict standard padded encoding', () => {
  for (const len of [0, 1, 2, 3, 4, 32, 64]) {
    const b = Uint8Array.from({ length: len }, (_, i) => (i * 37 + 11) & 0xff);
    assert.deepEqual(fromBase64(toBase64(b)), b);
  }
  assert.deepEqual(fromBase64('/+8='), Uint8Array.of(0xff, 0xef));
  for (const s of ['AQ', 'AQ=', 'AQI', '_-8=', 'AQ==\n', ' AQ==', 'A===', 'AQ=a', 'AR==', 'AQN=']) {
    assert.throws(() => fromBase64(s), KeyFormatError, s);
  }
});
