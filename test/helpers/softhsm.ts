import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { renderSoftHsmConf, SOFTHSM_MODULE } from '../../src/pkcs11/softhsm.ts';

const run = promisify(execFile);

/** A fresh SoftHSM token in its own temporary directory. */
export interface SoftHsmToken {
  /** temporary directory holding the config, the token files and the PIN file */
  dir: string;
  /** the private softhsm2.conf (SOFTHSM2_CONF) */
  confPath: string;
  modulePath: string;
  label: string;
  /** user PIN */
  pin: string;
  /** file (mode 0600) containing the user PIN */
  pinFile: string;
  /** `{ SOFTHSM2_CONF }`: merge into a child's environment, or into process.env before the first openHsm */
  env: Record<string, string>;
  /** removes the directory; call after every Hsm of the process using it is closed */
  cleanup(): Promise<void>;
}

/**
 * Creates an initialised SoftHSM token (user PIN set) in a new temp dir with its own
 * softhsm2.conf, so a test never touches the system token directory.
 *
 * SoftHSM reads SOFTHSM2_CONF once, at C_Initialize: a test process that opens the token
 * in-process must set `process.env.SOFTHSM2_CONF = token.confPath` before its first openHsm,
 * and can use only this token directory until every Hsm is closed (node's test runner gives each
 * test file its own process).
 */
export async function createSoftHsmToken(opts: { label?: string; pin?: string } = {}): Promise<SoftHsmToken> {
  const dir = await mkdtemp(join(tmpdir(), 'cometkms-softhsm-'));
  try {
    const label = opts.label ?? 'cometkms-test';
    const pin = opts.pin ?? randomBytes(8).toString('hex');
    const tokenDir = join(dir, 'tokens');
    const confPath = join(dir, 'softhsm2.conf');
    const pinFile = join(dir, 'user.pin');
    await mkdir(tokenDir, { mode: 0o700 });
    await writeFile(confPath, await renderSoftHsmConf(tokenDir), { mode: 0o600 });
    await writeFile(pinFile, `${pin}\n`, { mode: 0o600 });
    const env = { SOFTHSM2_CONF: confPath };
    // softhsm2-util takes PINs on its command line; acceptable for throwaway test tokens only.
    await run(
      'softhsm2-util',
      ['--init-token', '--free', '--label', label, '--pin', pin, '--so-pin', randomBytes(8).toString('hex')],
      { env: { ...process.env, ...env }, timeout: 30_000 },
    );
    return {
      dir,
      confPath,
      modulePath: SOFTHSM_MODULE,
      label,
      pin,
      pinFile,
      env,
      cleanup: () => rm(dir, { recursive: true, force: true }),
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
