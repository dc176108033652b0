/** Bad input against a real SoftHSM token: every case is a clear error and nothing is signed. */
import assert from 'node:assert/strict';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ed25519 } from '@noble/curves/ed25519.js';
import pkcs11js from 'pkcs11js';
import { CKK_EC_EDWARDS } from '../../../src/pkcs11/constants.ts';
import { derOctetString, EC_PARAMS } from '../../../src/pkcs11/ec.ts';
import { HsmError } from '../../../src/pkcs11/errors.ts';
import { type Hsm, openHsm } from '../../../src/pkcs11/hsm.ts';
import { acquireModule, releaseModule } from '../../../src/pkcs11/module.ts';
import { PIN_ENV, readPin } from '../../../src/pkcs11/pin.ts';
import { loadProfile } from '../../../src/pkcs11/profiles.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.ts';

let token: SoftHsmToken;
let hsm: Hsm;

before(async () => {
  token = await createSoftHsmToken({ label: 'errors-test' });
  process.env.SOFTHSM2_CONF = token.confPath;
  hsm = await openHsm({ module: token.modulePath, tokenLabel: token.label });
  await hsm.generateKey('ed', 'ed25519', token.pin);
});

after(async () => {
  await hsm?.close();
  await token?.cleanup();
});

/**
 * Creates raw objects the CLI would never create (duplicate labels, mismatched halves) through
 * the module the Hsm shares, in a logged-in read-write session.
 */
function createRawObjects(templates: pkcs11js.Template[]): void {
  const module = acquireModule(token.modulePath);
  const pk = module.pkcs11;
  try {
    const slot = pk.C_GetSlotList(true).find((s) => pk.C_GetTokenInfo(s).label.trimEnd() === token.label);
    assert.ok(slot);
    const session = pk.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    try {
      try {
        pk.C_Login(session, pkcs11js.CKU_USER, token.pin);
      } catch (err) {
        assert.equal((err as { code?: number }).code, pkcs11js.CKR_USER_ALREADY_LOGGED_IN);
      }
      for (const template of templates) pk.C_CreateObject(session, template);
    } finally {
      pk.C_CloseSession(session);
    }
  } finally {
    releaseModule(module);
  }
}

function edPublicTemplate(label: string, pub: Uint8Array): pkcs11js.Template {
  return [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: CKK_EC_EDWARDS },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: false },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from(EC_PARAMS.ed25519Oid) },
    { type: pkcs11js.CKA_EC_POINT, value: Buffer.from(derOctetString(pub)) },
  ];
}

function edPrivateTemplate(label: string, seed: Uint8Array): pkcs11js.Template {
  return [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: CKK_EC_EDWARDS },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SIGN, value: true },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from(EC_PARAMS.ed25519Oid) },
    { type: pkcs11js.CKA_VALUE, value: Buffer.from(seed) },
  ];
}

describe('opening the HSM', () => {
  it('a missing module is a clear error', async () => {
    await assert.rejects(
      openHsm({ module: join(token.dir, 'no-such-module.so'), tokenLabel: token.label }),
      (err: unknown) => err instanceof HsmError && /PKCS#11 module not found/.test(err.message),
    );
  });

  it('a missing token names the tokens that are present', async () => {
    await assert.rejects(
      openHsm({ module: token.modulePath, tokenLabel: 'no-such-token' }),
      (err: unknown) =>
        err instanceof HsmError && /token "no-such-token" not found.*"errors-test"/.test(err.message),
    );
  });

  it('a wrong serial does not match the token', async () => {
    await assert.rejects(
      openHsm({ module: token.modulePath, tokenLabel: token.label, tokenSerial: '0000' }),
      /token "errors-test" with serial 0000 not found/,
    );
  });
});

describe('key lookup', () => {
  it('a key that does not exist', () => {
    assert.throws(() => hsm.findPublicKey('absent', 'ed25519'), /no public key labelled "absent"/);
    assert.throws(() => hsm.signer('absent', 'secp256k1'), HsmError);
  });

  it('a key of the wrong type', () => {
    assert.throws(() => hsm.findPublicKey('ed', 'secp256k1'), /key "ed" is ed25519, not secp256k1/);
  });

  it('two keys with one label', async () => {
    const a = ed25519.utils.randomSecretKey();
    const b = ed25519.utils.randomSecretKey();
    createRawObjects([
      edPublicTemplate('dup', ed25519.getPublicKey(a)),
      edPublicTemplate('dup', ed25519.getPublicKey(b)),
    ]);
    assert.throws(() => hsm.findPublicKey('dup', 'ed25519'), /2 public keys are labelled "dup"/);
    await assert.rejects(hsm.generateKey('dup', 'ed25519', token.pin), /already exists/);
  });

  it('a key type the profile does not support', async () => {
    const limited = await openHsm({
      module: token.modulePath,
      tokenLabel: token.label,
      profile: await loadProfile('aws-cloudhsm'),
    });
    try {
      await assert.rejects(limited.generateKey('x', 'ed25519', token.pin), /does not support ed25519/);
      await assert.rejects(
        limited.importKey('x', 'secp256k1', new Uint8Array(32).fill(1), token.pin),
        /does not allow importing secp256k1/,
      );
    } finally {
      await limited.close();
    }
  });
});

describe('signing', () => {
  it('without a signing session nothing is signed', async () => {
    assert.equal(hsm.signingSessionOpen, false);
    await assert.rejects(
      hsm.signer('ed', 'ed25519').sign(new Uint8Array([1])),
      /no HSM signing session is open/,
    );
  });

  it('a private key whose public half does not match: verification fails and nothing is returned', async () => {
    const priv = ed25519.utils.randomSecretKey();
    const other = ed25519.utils.randomSecretKey();
    createRawObjects([
      edPrivateTemplate('mismatch', priv),
      edPublicTemplate('mismatch', ed25519.getPublicKey(other)),
    ]);
    await hsm.openSigningSession(token.pin);
    try {
      const signer = hsm.signer('mismatch', 'ed25519');
      await assert.rejects(
        signer.sign(new Uint8Array([1, 2, 3])),
        (err: unknown) => err instanceof HsmError && /does not verify/.test(err.message),
      );
      // The session is still good for keys that are fine.
      assert.equal((await hsm.signer('ed', 'ed25519').sign(new Uint8Array([4]))).length, 64);
    } finally {
      await hsm.closeSigningSession();
    }
  });

  it('a public key without its private half', async () => {
    createRawObjects([edPublicTemplate('orphan', ed25519.getPublicKey(ed25519.utils.randomSecretKey()))]);
    await hsm.openSigningSession(token.pin);
    try {
      await assert.rejects(
        hsm.signer('orphan', 'ed25519').sign(new Uint8Array([1])),
        /no private key labelled "orphan"/,
      );
    } finally {
      await hsm.closeSigningSession();
    }
  });
});

describe('readPin', () => {
  it('reads a 0600 file without its trailing newline', async () => {
    assert.equal(await readPin(token.pinFile), token.pin);
  });

  it('refuses a PIN file that others can read', async () => {
    const loose = join(token.dir, 'loose.pin');
    await writeFile(loose, 'secret\n');
    await chmod(loose, 0o644);
    await assert.rejects(readPin(loose), /chmod 600/);
  });

  it('falls back to COMETKMS_HSM_PIN and fails clearly without either', async () => {
    const saved = process.env[PIN_ENV];
    try {
      process.env[PIN_ENV] = 'from-env';
      assert.equal(await readPin(), 'from-env');
      delete process.env[PIN_ENV];
      await assert.rejects(readPin(), /no HSM PIN/);
    } finally {
      if (saved === undefined) delete process.env[PIN_ENV];
      else process.env[PIN_ENV] = saved;
    }
  });
});
