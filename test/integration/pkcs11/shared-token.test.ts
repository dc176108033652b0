/**
 * One SoftHSM token used by two processes at once, as three nodes on one host use it (README).
 * SoftHSM rewrites the token's files on every C_Login, and a process that reads them meanwhile
 * can miss the token or get CKR_GENERAL_ERROR; openHsm and the signing-session login retry those
 * two failures a bounded number of times. Without the retries about 0.7 % of the opens below
 * fail (measured), so a thousand of them in a row all succeed only with the retries.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openHsm } from '../../../src/pkcs11/hsm.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.ts';

const REPO = join(import.meta.dirname, '../../..');
const OPENS = 1000;
/** the other process stops by itself after this long, should the test die before killing it */
const OTHER_PROCESS_MAX_MS = 60_000;

/**
 * The other process: logs in and out of the token without pause, so its files are rewritten all
 * the time. Its own failed logins (the same race, seen from its side) are counted, not fatal.
 * Prints "ready" after its first login, then the number of logins when it ends.
 */
const LOGIN_LOOP = `
const pkcs11js = require('pkcs11js');
const [modulePath, label, pin, maxMs] = process.argv.slice(1);
const pk = new pkcs11js.PKCS11();
pk.load(modulePath);
pk.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
const slot = pk.C_GetSlotList(true).find((s) => pk.C_GetTokenInfo(s).label.trimEnd() === label);
let logins = 0;
let ready = false;
let stop = false;
process.on('SIGTERM', () => { stop = true; });
const end = Date.now() + Number(maxMs);
function burst() {
  for (let i = 0; i < 50 && Date.now() < end; i++) {
    try {
      const session = pk.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
      try { pk.C_Login(session, pkcs11js.CKU_USER, pin); pk.C_Logout(session); logins++; }
      finally { pk.C_CloseSession(session); }
    } catch {}
    if (logins > 0 && !ready) { ready = true; process.stdout.write('ready\\n'); }
  }
  if (stop || Date.now() >= end) { process.stdout.write(logins + '\\n'); pk.C_Finalize(); process.exit(0); }
  setImmediate(burst);
}
burst();
`;

describe('a token another process logs in to without pause', () => {
  let token: SoftHsmToken;
  let other: ChildProcess | undefined;

  before(async () => {
    token = await createSoftHsmToken({ label: 'shared-token' });
    process.env.SOFTHSM2_CONF = token.confPath;
  });

  after(async () => {
    if (other?.exitCode === null) other.kill('SIGKILL');
    await token?.cleanup();
  });

  it(`is opened and logged in to ${OPENS} times in a row without a failure`, async () => {
    other = spawn(
      process.execPath,
      ['-e', LOGIN_LOOP, token.modulePath, token.label, token.pin, String(OTHER_PROCESS_MAX_MS)],
      // the repository as working directory, so that require('pkcs11js') finds our copy
      { cwd: REPO, env: { ...process.env, ...token.env }, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(
        () => reject(new Error(`the other process did not log in within 30 s: ${out}`)),
        30_000,
      );
      other?.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
        out += chunk;
        if (out.includes('ready')) resolve();
      });
      other?.once('exit', (code) =>
        reject(new Error(`the other process exited (${code}) before its first login`)),
      );
    }).finally(() => clearTimeout(timer));

    for (let i = 0; i < OPENS; i++) {
      const hsm = await openHsm({ module: token.modulePath, tokenLabel: token.label });
      try {
        await hsm.openSigningSession(token.pin);
      } finally {
        await hsm.close();
      }
    }

    // The race needs the other process to have been writing the whole time: it still runs.
    assert.equal(other.exitCode, null, 'the other process stopped before the opens were done');
    const exited = once(other, 'exit');
    other.kill('SIGTERM');
    await exited;
    const logins = Number(out.trim().split('\n').at(-1));
    assert.ok(logins > OPENS, `the other process logged in ${logins} times`);
  });
});
