import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import {
  derOctetString,
  EC_PARAMS,
  ecPointForImport,
  keyTypeOfEcParams,
  pubKeyFromEcPoint,
} from '../../../src/pkcs11/ec.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const K1_PUB = Uint8Array.from(
  Buffer.from('02950e1cdfcb133d6024109fd489f734eeb4502418e538c28481f22bce276f248c', 'hex'),
);

describe('EC encodings', () => {
  it('names both ed25519 encodings and secp256k1, nothing else', () => {
    assert.equal(hex(EC_PARAMS.ed25519Printable), '130c656477617264733235353139');
    assert.equal(keyTypeOfEcParams(EC_PARAMS.ed25519Oid), 'ed25519');
    assert.equal(keyTypeOfEcParams(EC_PARAMS.ed25519Printable), 'ed25519');
    assert.equal(keyTypeOfEcParams(EC_PARAMS.secp256k1Oid), 'secp256k1');
    // P-256
    assert.equal(keyTypeOfEcParams(Uint8Array.from(Buffer.from('06082a8648ce3d030107', 'hex'))), undefined);
  });

  it('DER OCTET STRING in short and long form', () => {
    assert.equal(hex(derOctetString(new Uint8Array([1, 2]))), '04020102');
    const long = derOctetString(new Uint8Array(200));
    assert.equal(hex(long.subarray(0, 3)), '0481c8');
    assert.equal(long.length, 203);
  });

  it('ed25519: strips the OCTET STRING header, accepts a bare key, rejects anything else', () => {
    const pub = new Uint8Array(32).fill(5);
    assert.deepEqual(pubKeyFromEcPoint('ed25519', derOctetString(pub)).bytes, pub);
    assert.deepEqual(pubKeyFromEcPoint('ed25519', pub).bytes, pub);
    assert.throws(
      () => pubKeyFromEcPoint('ed25519', derOctetString(new Uint8Array(31))),
      /unexpected CKA_EC_POINT/,
    );
  });

  it('secp256k1: uncompressed DER point → 33-byte compressed key, round trip with import', () => {
    const uncompressed = secp256k1.Point.fromBytes(K1_PUB).toBytes(false);
    assert.deepEqual(pubKeyFromEcPoint('secp256k1', derOctetString(uncompressed)).bytes, K1_PUB);
    assert.deepEqual(pubKeyFromEcPoint('secp256k1', uncompressed).bytes, K1_PUB);
    const stored = ecPointForImport({ type: 'secp256k1', bytes: K1_PUB });
    assert.equal(hex(stored.subarray(0, 3)), '044104');
    assert.deepEqual(pubKeyFromEcPoint('secp256k1', stored).bytes, K1_PUB);
    const offCurve = new Uint8Array(65).fill(1);
    offCurve[0] = 4;
    assert.throws(() => pubKeyFromEcPoint('secp256k1', derOctetString(offCurve)), /not a point on the curve/);
  });
});
