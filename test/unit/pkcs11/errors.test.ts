import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pkcs11js from 'pkcs11js';
import { ckrName, HsmError, normalizeError, Pkcs11Error, p11, p11Async } from '../../../src/pkcs11/errors.ts';
import { Mutex } from '../../../src/pkcs11/mutex.ts';

describe('PKCS#11 error normalisation', () => {
  it('a plain Error("CKR_X:n") becomes a Pkcs11Error with name and code', () => {
    const err = normalizeError(new Error('CKR_PIN_INCORRECT:160'), 'C_Login');
    assert.ok(err instanceof Pkcs11Error);
    assert.equal(err.ckr, 'CKR_PIN_INCORRECT');
    assert.equal(err.code, 0xa0);
    assert.match(err.message, /C_Login failed: CKR_PIN_INCORRECT \(0xa0\)/);
  });

  it("pkcs11js's own Pkcs11Error is converted", () => {
    const err = normalizeError(new pkcs11js.Pkcs11Error('CKR_USER_ALREADY_LOGGED_IN:256', 256, 'C_Login'));
    assert.ok(err instanceof Pkcs11Error);
    assert.equal(err.ckr, 'CKR_USER_ALREADY_LOGGED_IN');
    assert.equal(err.code, 0x100);
  });

  it('other errors pass through unchanged', () => {
    const type = new TypeError('bad argument');
    assert.equal(normalizeError(type), type);
    const hsm = new HsmError('x');
    assert.equal(normalizeError(hsm), hsm);
  });

  it('unknown codes get a hex name', () => {
    assert.equal(ckrName(0x80000001), 'CKR_0x80000001');
    assert.equal(ckrName(0), 'CKR_OK');
  });

  it('p11 and p11Async rethrow normalised errors', async () => {
    assert.throws(
      () =>
        p11('C_Sign', () => {
          throw new Error('CKR_OPERATION_ACTIVE:144');
        }),
      (e: unknown) => e instanceof Pkcs11Error && e.ckr === 'CKR_OPERATION_ACTIVE',
    );
    await assert.rejects(
      p11Async('C_Sign', () => Promise.reject(new Error('CKR_DEVICE_ERROR:48'))),
      (e: unknown) => e instanceof Pkcs11Error && e.code === 0x30,
    );
  });
});

describe('Mutex', () => {
  it('runs holders one at a time in call order, releasing on failure', async () => {
    const m = new Mutex();
    const log: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const a = m.run(async () => {
      log.push('a start');
      await gate;
      log.push('a end');
      throw new Error('a failed');
    });
    const b = m.run(() => {
      log.push('b');
      return 2;
    });
    release();
    await assert.rejects(a, /a failed/);
    assert.equal(await b, 2);
    assert.deepEqual(log, ['a start', 'a end', 'b']);
  });
});
