/**
 * Key generation, import and signing against a real SoftHSM token (one token for this file:
 * SoftHSM reads SOFTHSM2_CONF once per process).
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { ed25519 } from '@noble/curves/ed25519.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import pkcs11js from 'pkcs11js';
import { toHex } from '../../../src/cometbft/keys.ts';
import { parsePrivValidatorKey } from '../../../src/cometbft/privval-files.ts';
import { CKM_EDDSA } from '../../../src/pkcs11/constants.ts';
import { Pkcs11Error } from '../../../src/pkcs11/errors.ts';
import { type Hsm, openHsm } from '../../../src/pkcs11/hsm.ts';
import { acquireModule, releaseModule } from '../../../src/pkcs11/module.ts';
import { loadProfile } from '../../../src/pkcs11/profiles.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.ts';

const vectors = JSON.parse(
  await readFile(new URL('../../vectors/upstream/crypto-keys.json', import.meta.url), 'utf8'),
);
const fromHex = (h: string) => Uint8Array.from(Buffer.from(h, 'hex'));

let token: SoftHsmToken;
let hsm: Hsm;

before(async () => {
  token = await createSoftHsmToken({ label: 'keys-test' });
  process.env.SOFTHSM2_CONF = token.confPath;
  hsm = await openHsm({
    module: token.modulePath,
    tokenLabel: token.label,
    profile: await loadProfile('softhsm2'),
  });
});

after(async () => {
  await hsm?.close();
  await token?.cleanup();
});

/** Reads attributes of the private key `label` through a raw logged-in session. */
function privateKeyAttributes(label: string, types: number[]): Map<number, Buffer> {
  const module = acquireModule(token.modulePath);
  const pk = module.pkcs11;
  try {
    const slot = pk.C_GetSlotList(true).find((s) => pk.C_GetTokenInfo(s).label.trimEnd() === token.label);
    assert.ok(slot);
    const session = pk.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
    try {
      try {
        pk.C_Login(session, pkcs11js.CKU_USER, token.pin);
      } catch (err) {
        assert.equal((err as { code?: number }).code, pkcs11js.CKR_USER_ALREADY_LOGGED_IN);
      }
      pk.C_FindObjectsInit(session, [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
        { type: pkcs11js.CKA_LABEL, value: label },
      ]);
      const [handle] = pk.C_FindObjects(session, 2);
      pk.C_FindObjectsFinal(session);
      assert.ok(handle);
      const out = new Map<number, Buffer>();
      for (const type of types) {
        const [attr] = pk.C_GetAttributeValue(session, handle, [{ type }]);
        if (attr?.value) out.set(type, attr.value);
      }
      return out;
    } finally {
      pk.C_CloseSession(session);
    }
  } finally {
    releaseModule(module);
  }
}

describe('generated keys', () => {
  it('generates ed25519 and secp256k1 keys whose public halves the token reports', async () => {
    const ed = await hsm.generateKey('gen-ed', 'ed25519', token.pin);
    const k1 = await hsm.generateKey('gen-k1', 'secp256k1', token.pin);
    assert.equal(ed.bytes.length, 32);
    assert.equal(k1.bytes.length, 33);
    assert.ok(k1.bytes[0] === 2 || k1.bytes[0] === 3, 'compressed SEC1');
    assert.deepEqual(hsm.findPublicKey('gen-ed', 'ed25519'), ed);
    assert.deepEqual(hsm.findPublicKey('gen-k1', 'secp256k1'), k1);
    const listed = hsm.listKeys().filter((k) => k.label.startsWith('gen-'));
    assert.deepEqual(
      listed.map((k) => [k.label, k.type, toHex(k.pubKey.bytes)]),
      [
        ['gen-ed', 'ed25519', toHex(ed.bytes)],
        ['gen-k1', 'secp256k1', toHex(k1.bytes)],
      ],
    );
    for (const k of listed) assert.match(k.id, /^[0-9a-f]{16}$/);
  });

  it('signs with generated keys; signatures verify with @noble/curves', async () => {
    await hsm.openSigningSession(token.pin);
    const msg = new TextEncoder().encode('vote sign bytes');
    const ed = hsm.signer('gen-ed', 'ed25519');
    const k1 = hsm.signer('gen-k1', 'secp256k1');
    assert.ok(ed25519.verify(await ed.sign(msg), msg, ed.pubKey.bytes));
    assert.ok(secp256k1.verify(await k1.sign(msg), msg, k1.pubKey.bytes, { prehash: true, lowS: true }));
  });

  it('keeps private keys sensitive, non-extractable, unmodifiable and restricted to one mechanism', () => {
    const attrs = privateKeyAttributes('gen-ed', [
      pkcs11js.CKA_SENSITIVE,
      pkcs11js.CKA_EXTRACTABLE,
      pkcs11js.CKA_MODIFIABLE,
      pkcs11js.CKA_TOKEN,
      pkcs11js.CKA_DECRYPT,
      pkcs11js.CKA_UNWRAP,
      pkcs11js.CKA_DERIVE,
      pkcs11js.CKA_ALLOWED_MECHANISMS,
    ]);
    const flag = (t: number) => attrs.get(t)?.[0];
    assert.equal(flag(pkcs11js.CKA_SENSITIVE), 1);
    assert.equal(flag(pkcs11js.CKA_EXTRACTABLE), 0);
    assert.equal(flag(pkcs11js.CKA_MODIFIABLE), 0);
    assert.equal(flag(pkcs11js.CKA_TOKEN), 1);
    assert.equal(flag(pkcs11js.CKA_DECRYPT), 0);
    assert.equal(flag(pkcs11js.CKA_UNWRAP), 0);
    assert.equal(flag(pkcs11js.CKA_DERIVE), 0);
    const mechanisms = attrs.get(pkcs11js.CKA_ALLOWED_MECHANISMS);
    assert.ok(mechanisms);
    assert.deepEqual([...new BigUint64Array(Uint8Array.from(mechanisms).buffer)], [BigInt(CKM_EDDSA)]);
  });

  it('refuses to reveal CKA_VALUE of a private key', () => {
    for (const label of ['gen-ed', 'gen-k1']) {
      assert.throws(
        () => privateKeyAttributes(label, [pkcs11js.CKA_VALUE]),
        (err: Error) => /CKR_ATTRIBUTE_SENSITIVE/.test(err.message),
      );
    }
  });

  it('refuses a label that already exists', async () => {
    await assert.rejects(hsm.generateKey('gen-ed', 'secp256k1', token.pin), /already exists/);
    await assert.rejects(
      hsm.importKey('gen-k1', 'ed25519', new Uint8Array(32).fill(7), token.pin),
      /already exists/,
    );
  });
});

describe('imported keys', () => {
  const secret = vectors.ed25519_it_s_a_secret;
  const k1Vector = vectors.secp256k1_address;

  it('imports the "it\'s a secret" ed25519 key and signs byte-identically to @noble/curves', async () => {
    const parsed = parsePrivValidatorKey(JSON.stringify(secret.priv_validator_key_json));
    const pub = await hsm.importKey('secret-ed', 'ed25519', parsed.privateKey, token.pin);
    assert.equal(toHex(pub.bytes), secret.pubkey);
    assert.equal(toHex(hsm.findPublicKey('secret-ed', 'ed25519').bytes), secret.pubkey);
    await hsm.openSigningSession(token.pin);
    const signer = hsm.signer('secret-ed', 'ed25519');
    const seed = fromHex(secret.seed_sha256_of_secret);
    for (const msg of [
      new Uint8Array(1),
      new TextEncoder().encode('hello'),
      new Uint8Array(1000).fill(0xab),
    ]) {
      assert.equal(toHex(await signer.sign(msg)), toHex(ed25519.sign(msg, seed)));
    }
  });

  it('refuses an empty message, and the session stays usable', async () => {
    const signer = hsm.signer('secret-ed', 'ed25519');
    await assert.rejects(signer.sign(new Uint8Array(0)), /empty message/);
    const msg = new Uint8Array([1, 2, 3]);
    assert.equal(
      toHex(await signer.sign(msg)),
      toHex(ed25519.sign(msg, fromHex(secret.seed_sha256_of_secret))),
    );
  });

  it('imports the secp256k1 vector key; its public key matches and signatures verify', async () => {
    const pub = await hsm.importKey('vec-k1', 'secp256k1', fromHex(k1Vector.priv), token.pin);
    assert.equal(toHex(pub.bytes), k1Vector.pub_compressed);
    assert.equal(toHex(hsm.findPublicKey('vec-k1', 'secp256k1').bytes), k1Vector.pub_compressed);
    await hsm.openSigningSession(token.pin);
    const msg = new TextEncoder().encode('proposal');
    const sig = await hsm.signer('vec-k1', 'secp256k1').sign(msg);
    assert.ok(secp256k1.verify(sig, msg, fromHex(k1Vector.pub_compressed), { prehash: true, lowS: true }));
  });

  it('imported keys carry the same protections as generated ones', () => {
    assert.throws(() => privateKeyAttributes('vec-k1', [pkcs11js.CKA_VALUE]), /CKR_ATTRIBUTE_SENSITIVE/);
    const attrs = privateKeyAttributes('secret-ed', [pkcs11js.CKA_SENSITIVE, pkcs11js.CKA_MODIFIABLE]);
    assert.equal(attrs.get(pkcs11js.CKA_SENSITIVE)?.[0], 1);
    assert.equal(attrs.get(pkcs11js.CKA_MODIFIABLE)?.[0], 0);
  });

  it('refuses a 64-byte ed25519 value (seed‖pub) and an invalid secp256k1 scalar', async () => {
    const full = Buffer.from(secret.priv_validator_key_json.priv_key.value, 'base64');
    assert.equal(full.length, 64);
    await assert.rejects(hsm.importKey('long-seed', 'ed25519', full, token.pin), /must be 32 bytes, got 64/);
    await assert.rejects(
      hsm.importKey('zero-k1', 'secp256k1', new Uint8Array(32), token.pin),
      /invalid secp256k1 private key/,
    );
    assert.equal(
      hsm.listKeys().some((k) => k.label === 'long-seed' || k.label === 'zero-k1'),
      false,
    );
  });
});

describe('secp256k1 low-S', () => {
  it('1000 signatures, signed concurrently, all pass a strict low-S verifier', async () => {
    await hsm.openSigningSession(token.pin);
    const signer = hsm.signer('gen-k1', 'secp256k1');
    const messages = Array.from({ length: 1000 }, (_, i) => new TextEncoder().encode(`msg ${i}`));
    const sigs = await Promise.all(messages.map((m) => signer.sign(m)));
    const halfN = secp256k1.Point.CURVE().n >> 1n;
    sigs.forEach((sig, i) => {
      assert.equal(sig.length, 64);
      assert.ok(BigInt(`0x${toHex(sig.subarray(32))}`) <= halfN, `signature ${i} is high-S`);
      assert.ok(
        secp256k1.verify(sig, messages[i] as Uint8Array, signer.pubKey.bytes, { prehash: true, lowS: true }),
        `signature ${i} does not verify`,
      );
    });
  });
});

describe('wrong PIN', () => {
  it('is a Pkcs11Error and is never retried by the same Hsm', async () => {
    const other = await openHsm({ module: token.modulePath, tokenLabel: token.label });
    try {
      // The shared login state of the process would hide the PIN check, so log out first.
      await hsm.closeSigningSession();
      await assert.rejects(other.openSigningSession('wrong-pin'), (err: unknown) => {
        assert.ok(err instanceof Pkcs11Error);
        assert.equal(err.ckr, 'CKR_PIN_INCORRECT');
        return true;
      });
      assert.equal(other.signingSessionOpen, false);
      await assert.rejects(other.openSigningSession(token.pin), /login refused.*CKR_PIN_INCORRECT/);
      await assert.rejects(
        other.signer('gen-ed', 'ed25519').sign(new Uint8Array(1)),
        /no HSM signing session/,
      );
    } finally {
      await other.close();
    }
  });
});
