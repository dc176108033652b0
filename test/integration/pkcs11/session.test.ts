/** Signing-session lifecycle, draining and re-initialisation against a real SoftHSM token. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { verifySignature } from '../../../src/cometbft/verify.ts';
import { HsmError } from '../../../src/pkcs11/errors.ts';
import { type Hsm, openHsm } from '../../../src/pkcs11/hsm.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.ts';

let token: SoftHsmToken;

before(async () => {
  token = await createSoftHsmToken({ label: 'session-test' });
  process.env.SOFTHSM2_CONF = token.confPath;
  const setup = await openHsm({ module: token.modulePath, tokenLabel: token.label });
  try {
    await setup.generateKey('ed', 'ed25519', token.pin);
    await setup.generateKey('k1', 'secp256k1', token.pin);
  } finally {
    await setup.close();
  }
});

after(async () => {
  await token?.cleanup();
});

const open = () => openHsm({ module: token.modulePath, tokenLabel: token.label });
const message = (i: number) => new TextEncoder().encode(`sign bytes ${i}`);

/** Starts `n` signatures alternating between the two keys; returns their outcomes. */
function signMany(hsm: Hsm, n: number): Promise<PromiseSettledResult<Uint8Array>>[] {
  const signers = [hsm.signer('ed', 'ed25519'), hsm.signer('k1', 'secp256k1')];
  return Array.from({ length: n }, (_, i) => {
    const signer = signers[i % 2];
    assert.ok(signer);
    return signer.sign(message(i)).then(
      (value) => ({ status: 'fulfilled', value }) as const,
      (reason: unknown) => ({ status: 'rejected', reason }) as const,
    );
  });
}

/** Every outcome is a verifying signature or an HsmError; returns how many were signed. */
function checkOutcomes(hsm: Hsm, outcomes: PromiseSettledResult<Uint8Array>[]): number {
  const pubKeys = [hsm.findPublicKey('ed', 'ed25519'), hsm.findPublicKey('k1', 'secp256k1')];
  let signed = 0;
  outcomes.forEach((o, i) => {
    if (o.status === 'fulfilled') {
      assert.ok(
        verifySignature(pubKeys[i % 2] as (typeof pubKeys)[0], message(i), o.value),
        `signature ${i}`,
      );
      signed++;
    } else {
      assert.ok(o.reason instanceof HsmError, `outcome ${i}: ${String(o.reason)}`);
    }
  });
  return signed;
}

describe('signing session', () => {
  it('followers read public keys without logging in', async () => {
    const follower = await open();
    try {
      assert.equal(follower.signingSessionOpen, false);
      assert.equal(follower.findPublicKey('ed', 'ed25519').bytes.length, 32);
      assert.equal(follower.findPublicKey('k1', 'secp256k1').bytes.length, 33);
      assert.deepEqual(
        follower.listKeys().map((k) => k.label),
        ['ed', 'k1'],
      );
    } finally {
      await follower.close();
    }
  });

  it('opening is idempotent, closing stops signing, reopening signs again', async () => {
    const hsm = await open();
    try {
      await Promise.all([hsm.openSigningSession(token.pin), hsm.openSigningSession(token.pin)]);
      await hsm.openSigningSession(token.pin);
      assert.equal(hsm.signingSessionOpen, true);
      const signer = hsm.signer('ed', 'ed25519');
      await signer.sign(message(0));
      await hsm.closeSigningSession();
      await hsm.closeSigningSession();
      assert.equal(hsm.signingSessionOpen, false);
      await assert.rejects(signer.sign(message(1)), /no HSM signing session/);
      await hsm.openSigningSession(token.pin);
      assert.ok(verifySignature(signer.pubKey, message(2), await signer.sign(message(2))));
    } finally {
      await hsm.close();
    }
  });

  it('a signature with another key than the armed one swaps the session and signs', async () => {
    // After each signature the next C_SignInit runs ahead, for the same key (#armNext): a
    // signature with the other key then meets an operation it cannot use or cancel.
    const hsm = await open();
    try {
      await hsm.openSigningSession(token.pin);
      const ed = hsm.signer('ed', 'ed25519');
      const k1 = hsm.signer('k1', 'secp256k1');
      for (const [i, signer] of [ed, ed, k1, ed, k1, k1].entries()) {
        assert.ok(
          verifySignature(signer.pubKey, message(i), await signer.sign(message(i))),
          `signature ${i}`,
        );
        // let the arming run before the next signature
        await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      await hsm.close();
    }
  });

  it('closing the session while 400 signatures are in flight drains them', async () => {
    const hsm = await open();
    try {
      await hsm.openSigningSession(token.pin);
      const pending = signMany(hsm, 400);
      const closing = hsm.closeSigningSession();
      const outcomes = await Promise.all(pending);
      await closing;
      assert.equal(hsm.signingSessionOpen, false);
      // Whatever was under way when closing started finished; nothing else was signed.
      const signed = checkOutcomes(hsm, outcomes);
      assert.ok(signed < 400);
    } finally {
      await hsm.close();
    }
  });

  it('close() during signing drains, finalises, and a re-initialised module finds the keys again', async () => {
    const first = await open();
    await first.openSigningSession(token.pin);
    const warm = signMany(first, 2);
    const outcomes1 = await Promise.all(warm);
    assert.equal(checkOutcomes(first, outcomes1), 2);
    const pending = signMany(first, 200);
    await first.close();
    const outcomes = await Promise.all(pending);
    for (const o of outcomes) assert.ok(o.status === 'rejected' || o.value.length === 64);
    assert.throws(() => first.findPublicKey('ed', 'ed25519'), /closed/);

    // The module was finalised (last user closed); this opens and initialises it again.
    const second = await open();
    try {
      await second.openSigningSession(token.pin);
      const again = await Promise.all(signMany(second, 50));
      assert.equal(checkOutcomes(second, again), 50);
    } finally {
      await second.close();
    }
  });

  it('two Hsm instances share the module; the last close finalises it', async () => {
    const a = await open();
    const b = await open();
    await a.openSigningSession(token.pin);
    await b.close();
    // a still works after b closed: the module was not finalised under it.
    const signed = await a.signer('k1', 'secp256k1').sign(message(7));
    assert.ok(verifySignature(a.findPublicKey('k1', 'secp256k1'), message(7), signed));
    await a.close();
  });
});
