import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CKM_EDDSA } from '../../../src/pkcs11/constants.ts';
import { EC_PARAMS } from '../../../src/pkcs11/ec.ts';
import { listProfileNames, loadProfile, parseProfile } from '../../../src/pkcs11/profiles.ts';

const VALID = `
name = "x"
description = "d"
tested = false
status = "Untested here."
default_module = "/lib/x.so"
pin_format = "p"
set_allowed_mechanisms = true
limits = ["l"]
[key_types.ed25519]
ec_params = "130c656477617264733235353139"
keygen_mechanism = "CKM_EC_EDWARDS_KEY_PAIR_GEN"
sign_mechanism = "CKM_EDDSA"
import = true
`;

describe('HSM profiles', () => {
  it('ships the five HSM families, all valid', async () => {
    const names = await listProfileNames();
    assert.deepEqual(names, ['aws-cloudhsm', 'entrust-nshield', 'softhsm2', 'thales-luna', 'yubihsm2']);
    for (const name of names) {
      const p = await loadProfile(name);
      assert.equal(p.name, name);
      // Only SoftHSM is exercised by this repository's tests; every other profile says so.
      assert.equal(p.tested, name === 'softhsm2');
      if (!p.tested) assert.match(p.status, /untested/i);
      assert.ok(p.limits.length > 0);
    }
  });

  it('softhsm2 uses the OID encoding and the standard mechanisms', async () => {
    const p = await loadProfile('softhsm2');
    assert.equal(p.defaultModule, '/usr/lib/softhsm/libsofthsm2.so');
    assert.deepEqual(p.keyTypes.ed25519?.ecParams, EC_PARAMS.ed25519Oid);
    assert.equal(p.keyTypes.ed25519?.signMechanism, CKM_EDDSA);
    assert.deepEqual(p.keyTypes.secp256k1?.ecParams, EC_PARAMS.secp256k1Oid);
  });

  it('accepts the printable-string ed25519 encoding', () => {
    assert.deepEqual(parseProfile(VALID, 't').keyTypes.ed25519?.ecParams, EC_PARAMS.ed25519Printable);
  });

  it('rejects malformed profiles with the reason', () => {
    const cases: [string, RegExp][] = [
      [VALID.replace('name = "x"', 'name = "x"\nextra = 1'), /unknown key "extra"/],
      [VALID.replace('Untested here.', 'fine'), /must say it is untested/],
      [VALID.replace('130c656477617264733235353139', '06052b8104000a'), /does not name the ed25519 curve/],
      [
        VALID.replace('sign_mechanism = "CKM_EDDSA"', 'sign_mechanism = "CKM_ECDSA"'),
        /sign_mechanism must be one of CKM_EDDSA/,
      ],
      [VALID.replace('[key_types.ed25519]', '[key_types.rsa]'), /unknown key type "rsa"/],
      [VALID.replace('import = true', 'import = "yes"'), /"key_types.ed25519.import" must be true or false/],
      [VALID.replace('tested = false', ''), /"tested" must be true or false/],
      ['name = ', /invalid TOML/],
    ];
    for (const [text, pattern] of cases) assert.throws(() => parseProfile(text, 't'), pattern);
  });

  it('an unknown profile name lists the known ones', async () => {
    await assert.rejects(loadProfile('nope'), /unknown HSM profile "nope" \(known: aws-cloudhsm, .*softhsm2/);
    await assert.rejects(loadProfile('../etc/passwd'), /invalid HSM profile name/);
  });
});
