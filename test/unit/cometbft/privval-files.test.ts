import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { sha256 } from '@noble/hashes/sha2.js';
import {
  fromBase64,
  fromHex,
  KeyFormatError,
  publicKeyFromPrivate,
  toBase64,
  toHex,
} from '../../../src/cometbft/keys.ts';
import {
  formatPrivValidatorKey,
  formatPrivValidatorState,
  type PrivValidatorState,
  parsePrivValidatorKey,
  parsePrivValidatorState,
} from '../../../src/cometbft/privval-files.ts';

const vectors = JSON.parse(
  readFileSync(new URL('../../vectors/upstream/crypto-keys.json', import.meta.url), 'utf8'),
) as {
  secp256k1_address: { priv: string; pub_compressed: string; address_hex: string };
  ed25519_it_s_a_secret: {
    secret_utf8: string;
    address: string;
    pubkey: string;
    priv_validator_key_json: object;
  };
};
const ed = vectors.ed25519_it_s_a_secret;
const secp = vectors.secp256k1_address;
const seed = sha256(new TextEncoder().encode(ed.secret_utf8));

/** The vector file as CometBFT writes it: MarshalIndent with two spaces, no trailing newline. */
const ED_FILE = JSON.stringify(ed.priv_validator_key_json, null, 2);

function edKeyDoc(): {
  address?: string;
  pub_key?: { type: string; value: string };
  priv_key: { type: string; value: string };
} {
  return JSON.parse(ED_FILE);
}

function rejects(json: string, message: RegExp): void {
  assert.throws(
    () => parsePrivValidatorKey(json),
    (e: unknown) => e instanceof KeyFormatError && message.test(e.message),
  );
}

test('ed25519 key file: formatting the "it\'s a secret" seed gives the vector byte for byte', () => {
  assert.equal(formatPrivValidatorKey('ed25519', seed), ED_FILE);
  assert.ok(
    ED_FILE.startsWith(
      '{\n  "address": "DC52D5CF8DFD1793D71038B342A29B01AD8A5D63",\n  "pub_key": {\n    "type"',
    ),
  );
});

test('ed25519 key file parses to seed, pub key and address', () => {
  const k = parsePrivValidatorKey(ED_FILE);
  assert.deepEqual(k.privateKey, seed);
  assert.equal(k.pubKey.type, 'ed25519');
  assert.equal(toHex(k.pubKey.bytes), ed.pubkey);
  assert.equal(toHex(k.address), ed.address);
});

test('secp256k1 key file round-trips', () => {
  const text = formatPrivValidatorKey('secp256k1', fromHex(secp.priv));
  const doc = JSON.parse(text);
  assert.deepEqual(Object.keys(doc), ['address', 'pub_key', 'priv_key']);
  assert.equal(doc.address, secp.address_hex.toUpperCase());
  assert.deepEqual(doc.pub_key, {
    type: 'tendermint/PubKeySecp256k1',
    value: toBase64(fromHex(secp.pub_compressed)),
  });
  assert.deepEqual(doc.priv_key, {
    type: 'tendermint/PrivKeySecp256k1',
    value: toBase64(fromHex(secp.priv)),
  });
  const k = parsePrivValidatorKey(text);
  assert.equal(toHex(k.privateKey), secp.priv);
  assert.equal(k.pubKey.type, 'secp256k1');
  assert.equal(toHex(k.pubKey.bytes), secp.pub_compressed);
  assert.equal(toHex(k.address), secp.address_hex);
  assert.equal(formatPrivValidatorKey('secp256k1', k.privateKey), text);
});

test('pub_key and address are optional, and a lowercase address is accepted', () => {
  const doc = edKeyDoc();
  delete doc.pub_key;
  delete doc.address;
  assert.equal(toHex(parsePrivValidatorKey(JSON.stringify(doc)).address), ed.address);
  const lower = edKeyDoc();
  lower.address = ed.address;
  assert.equal(toHex(parsePrivValidatorKey(JSON.stringify(lower)).address), ed.address);
});

test('ed25519 value whose public half does not match its seed is rejected', () => {
  const doc = edKeyDoc();
  const raw = fromBase64(doc.priv_key.value);
  raw[40] = raw[40]! ^ 1;
  doc.priv_key.value = toBase64(raw);
  rejects(JSON.stringify(doc), /public half .* is not the key derived from its seed/);
});

test('ed25519 values of the wrong length are rejected', () => {
  for (const len of [32, 63, 65, 96, 0]) {
    const doc = edKeyDoc();
    doc.priv_key.value = toBase64(new Uint8Array(len).fill(7));
    rejects(JSON.stringify(doc), new RegExp(`must be 64 bytes .* got ${len}$`));
  }
});

test('secp256k1 values of the wrong length or out of range are rejected', () => {
  const mk = (value: Uint8Array) =>
    JSON.stringify({ priv_key: { type: 'tendermint/PrivKeySecp256k1', value: toBase64(value) } });
  rejects(mk(new Uint8Array(33).fill(1)), /must be 32 bytes, got 33/);
  rejects(mk(new Uint8Array(64).fill(1)), /must be 32 bytes, got 64/);
  rejects(mk(new Uint8Array(32)), /1\.\.n-1/);
});

test('unknown priv_key types and malformed priv_key fields are rejected', () => {
  for (const type of ['tendermint/PrivKeySr25519', 'cometbft/PrivKeyBls12_381', 'ed25519', '']) {
    const doc = edKeyDoc();
    doc.priv_key.type = type;
    rejects(JSON.stringify(doc), /unsupported "priv_key" type/);
  }
  rejects(JSON.stringify({ address: ed.address }), /missing "priv_key"/);
  rejects(JSON.stringify({ priv_key: 'abc' }), /"priv_key" must be an object/);
  rejects(JSON.stringify({ priv_key: { type: 'tendermint/PrivKeyEd25519', value: 3 } }), /base64 string/);
});

test('bad base64 in priv_key or pub_key is rejected', () => {
  for (const mangle of [
    (v: string) => v.slice(0, -2),
    (v: string) => v.replace('+', '-'),
    (v: string) => ` ${v}`,
  ]) {
    const doc = edKeyDoc();
    doc.priv_key.value = mangle(doc.priv_key.value);
    rejects(JSON.stringify(doc), /"priv_key.value": .*base64/);
  }
  const doc = edKeyDoc();
  doc.pub_key!.value = doc.pub_key!.value.replace('=', '');
  rejects(JSON.stringify(doc), /"pub_key": .*base64/);
});

test('a pub_key or address that disagrees with priv_key is rejected with both values named', () => {
  const otherPub = toBase64(publicKeyFromPrivate('ed25519', new Uint8Array(32).fill(9)).bytes);
  const doc = edKeyDoc();
  doc.pub_key!.value = otherPub;
  rejects(JSON.stringify(doc), new RegExp(`"pub_key" .* does not match .*${ed.pubkey}`));

  const typeSwap = edKeyDoc();
  typeSwap.pub_key = { type: 'tendermint/PubKeySecp256k1', value: toBase64(fromHex(secp.pub_compressed)) };
  rejects(JSON.stringify(typeSwap), /"pub_key" \(secp256k1 .*\) does not match .*\(ed25519/);

  const addr = edKeyDoc();
  addr.address = '00'.repeat(20);
  rejects(JSON.stringify(addr), /"address" 0{40} does not match .*DC52D5CF8DFD1793D71038B342A29B01AD8A5D63/);
  const short = edKeyDoc();
  short.address = ed.address.slice(0, 38);
  rejects(JSON.stringify(short), /"address" .* does not match/);
  const notHex = edKeyDoc();
  notHex.address = 'zz'.repeat(20);
  rejects(JSON.stringify(notHex), /"address": .*non-hex/);
});

test('malformed key JSON is rejected', () => {
  rejects('', /malformed JSON/);
  rejects('{"priv_key": ', /malformed JSON/);
  rejects('[]', /top level must be a JSON object/);
  rejects('null', /top level/);
});

// ---- priv_validator_state.json ----

function rejectsState(json: string, message: RegExp): void {
  assert.throws(
    () => parsePrivValidatorState(json),
    (e: unknown) => e instanceof KeyFormatError && message.test(e.message),
    json,
  );
}

test('fresh state file parses and formats as CometBFT writes it', () => {
  const s = parsePrivValidatorState('{"height": "0", "round": 0, "step": 0}');
  assert.deepEqual(s, {
    height: 0n,
    round: 0,
    step: 0,
    signature: new Uint8Array(0),
    signBytes: new Uint8Array(0),
  });
  assert.equal(formatPrivValidatorState(s), '{\n  "height": "0",\n  "round": 0,\n  "step": 0\n}');
});

test('full state file round-trips byte for byte', () => {
  const sig = Uint8Array.from({ length: 64 }, (_, i) => i);
  const sb = fromHex('6f080211e803000000000000');
  const text = [
    '{',
    '  "height": "9223372036854775807",',
    '  "round": 2147483647,',
    '  "step": 3,',
    `  "signature": "${toBase64(sig)}",`,
    '  "signbytes": "6F080211E803000000000000"',
    '}',
  ].join('\n');
  const s = parsePrivValidatorState(text);
  assert.equal(s.height, 9223372036854775807n);
  assert.equal(s.round, 2147483647);
  assert.equal(s.step, 3);
  assert.deepEqual(s.signature, sig);
  assert.deepEqual(s.signBytes, sb);
  assert.equal(formatPrivValidatorState(s), text);
});

test('lowercase signbytes, numeric height and extra fields are accepted; null bytes mean empty', () => {
  const s = parsePrivValidatorState(
    '{"height": 12345, "round": 1, "step": 2, "signbytes": "abcdef", "signature": null, "extra": true}',
  );
  assert.equal(s.height, 12345n);
  assert.deepEqual(s.signBytes, Uint8Array.of(0xab, 0xcd, 0xef));
  assert.equal(s.signature.length, 0);
  assert.equal(
    formatPrivValidatorState(s),
    '{\n  "height": "12345",\n  "round": 1,\n  "step": 2,\n  "signbytes": "ABCDEF"\n}',
  );
});

test('signature without signbytes is written alone', () => {
  const s: PrivValidatorState = {
    height: 5n,
    round: 0,
    step: 1,
    signature: Uint8Array.of(1),
    signBytes: new Uint8Array(0),
  };
  assert.equal(
    formatPrivValidatorState(s),
    '{\n  "height": "5",\n  "round": 0,\n  "step": 1,\n  "signature": "AQ=="\n}',
  );
});

test('malformed state files are rejected naming the field', () => {
  const cases: [string, RegExp][] = [
    ['', /malformed JSON/],
    ['{"height": "1", "round": 0', /malformed JSON/],
    ['"x"', /top level/],
    ['{"round": 0, "step": 0}', /missing "height"/],
    ['{"height": "1", "step": 0}', /missing "round"/],
    ['{"height": "1", "round": 0}', /missing "step"/],
    ['{"height": "-1", "round": 0, "step": 0}', /"height" .* not a decimal integer/],
    ['{"height": -1, "round": 0, "step": 0}', /"height" -1 is out of range/],
    ['{"height": "+1", "round": 0, "step": 0}', /"height"/],
    ['{"height": "1.5", "round": 0, "step": 0}', /"height"/],
    ['{"height": "1e3", "round": 0, "step": 0}', /"height"/],
    ['{"height": " 1", "round": 0, "step": 0}', /"height"/],
    ['{"height": "", "round": 0, "step": 0}', /"height"/],
    ['{"height": 1.5, "round": 0, "step": 0}', /"height" 1.5/],
    ['{"height": 9007199254740993, "round": 0, "step": 0}', /"height" .* exactly representable/],
    ['{"height": "9223372036854775808", "round": 0, "step": 0}', /"height" .* out of range/],
    ['{"height": true, "round": 0, "step": 0}', /"height" must be a string/],
    ['{"height": null, "round": 0, "step": 0}', /"height" must be a string/],
    ['{"height": "1", "round": -1, "step": 0}', /"round" -1 is out of range/],
    ['{"height": "1", "round": 2147483648, "step": 0}', /"round" .* out of range/],
    ['{"height": "1", "round": "0", "step": 0}', /"round" must be an integer/],
    ['{"height": "1", "round": 0.5, "step": 0}', /"round" must be an integer/],
    ['{"height": "1", "round": 0, "step": 4}', /"step" 4 is out of range 0..3/],
    ['{"height": "1", "round": 0, "step": -1}', /"step" -1/],
    ['{"height": "1", "round": 0, "step": "3"}', /"step" must be an integer/],
    ['{"height": "1", "round": 0, "step": 0, "signature": "AQ"}', /"signature": .*base64/],
    ['{"height": "1", "round": 0, "step": 0, "signature": 5}', /"signature" must be a string/],
    ['{"height": "1", "round": 0, "step": 0, "signbytes": "ABC"}', /"signbytes": .*odd length/],
    ['{"height": "1", "round": 0, "step": 0, "signbytes": "GG"}', /"signbytes": .*non-hex/],
  ];
  for (const [json, re] of cases) rejectsState(json, re);
});

test('formatPrivValidatorState refuses states it could not read back', () => {
  const base: PrivValidatorState = {
    height: 1n,
    round: 0,
    step: 0,
    signature: new Uint8Array(0),
    signBytes: new Uint8Array(0),
  };
  for (const bad of [
    { ...base, height: -1n },
    { ...base, height: 1n << 63n },
    { ...base, round: -1 },
    { ...base, round: 1.5 },
    { ...base, step: 4 },
  ]) {
    assert.throws(() => formatPrivValidatorState(bad), KeyFormatError);
  }
});
