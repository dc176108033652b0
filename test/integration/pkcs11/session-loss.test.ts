/**
 * A signing session the token loses is reopened by the next signature while one is wanted, and
 * never after closeSigningSession (a follower must not get a session back). Found by the chaos
 * harness: after one CKR_DEVICE_REMOVED a single node answered "retry" until restarted. The
 * token faults come from the harness's PKCS#11 fault shim in front of SoftHSM.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { verifySignature } from '../../../src/cometbft/verify.ts';
import { HsmError, Pkcs11Error } from '../../../src/pkcs11/errors.ts';
import { type Hsm, openHsm } from '../../../src/pkcs11/hsm.ts';
import { buildFaultShim } from '../../chaos/harness/hsm/stack.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.ts';

let token: SoftHsmToken;
let dir: string;
let control: string;
let hsm: Hsm;

before(async () => {
  token = await createSoftHsmToken({ label: 'session-loss' });
  dir = await mkdtemp(join(tmpdir(), 'session-loss-'));
  control = join(dir, 'control');
  await writeFile(control, '');
  const shim = await buildFaultShim(dir);
  process.env.SOFTHSM2_CONF = token.confPath;
  process.env.CHAOS_SHIM_NEXT = token.modulePath;
  process.env.CHAOS_SHIM_CONTROL = control;
  hsm = await openHsm({ module: shim, tokenLabel: token.label });
  await hsm.generateKey('ed', 'ed25519', token.pin);
});

after(async () => {
  await hsm?.close();
  await token?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

const message = new TextEncoder().encode('sign bytes');

async function signs(): Promise<boolean> {
  const signer = hsm.signer('ed', 'ed25519');
  try {
    const sig = await signer.sign(message);
    assert.ok(verifySignature(signer.pubKey, message, sig));
    return true;
  } catch (err) {
    assert.ok(err instanceof HsmError || err instanceof Pkcs11Error, String(err));
    return false;
  }
}

describe('a lost signing session', () => {
  it('is reopened by the next signature after the token closed it', async () => {
    await hsm.openSigningSession(token.pin);
    assert.equal(await signs(), true);
    await writeFile(control, 'close 1\n');
    assert.equal(await signs(), false, 'the sign in the closed session fails');
    assert.equal(hsm.signingSessionOpen, false);
    assert.equal(await signs(), true, 'the next one reopens the session and signs');
    assert.equal(hsm.signingSessionOpen, true);
  });

  it('is reopened after CKR_DEVICE_REMOVED once the token is back, at most every 500 ms', async () => {
    // the arming scheduled by the last signature runs first (it is queued with setImmediate)
    await new Promise((resolve) => setImmediate(resolve));
    await writeFile(control, 'fail 50\n');
    // The shim fails C_SignInit. The next signature's C_SignInit ran right after the last
    // signature (armed), before the fault: that one signs, and only the one after meets it.
    assert.equal(await signs(), true, 'the armed operation signs');
    assert.equal(await signs(), false);
    await writeFile(control, '');
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(await signs(), true);
  });

  it('is reopened on time after the wall clock stepped back (the rate limit is monotonic)', async () => {
    // Found by the chaos harness (clock-jump then hsm-close-session on one node): a reopen made
    // while the wall clock was minutes ahead rate-limited every later reopen until the wall
    // clock caught up again, and the leader answered "retry" for those minutes.
    const wallClock = Date.now;
    await new Promise((r) => setTimeout(r, 600)); // past the previous test's reopen
    try {
      Date.now = () => wallClock() + 600_000;
      await writeFile(control, 'close 2\n');
      assert.equal(await signs(), false);
      assert.equal(await signs(), true, 'reopened while the wall clock is 10 minutes ahead');
    } finally {
      Date.now = wallClock;
    }
    await new Promise((r) => setTimeout(r, 600));
    await writeFile(control, 'close 3\n');
    assert.equal(await signs(), false);
    assert.equal(await signs(), true, 'the next loss is reopened, not rate-limited for 10 minutes');
  });

  it('is not reopened once the session was closed on purpose', async () => {
    await hsm.closeSigningSession();
    assert.equal(await signs(), false);
    assert.equal(hsm.signingSessionOpen, false);
  });
});
