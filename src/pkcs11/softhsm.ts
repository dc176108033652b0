import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pkcs11js from 'pkcs11js';
import { HsmError, p11 } from './errors.ts';
import { acquireModule, releaseModule, tokenLabel } from './module.ts';

/** Where Debian/Ubuntu install the SoftHSM v2 PKCS#11 module. */
export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

/** The config template shipped in softhsm/. */
export const SOFTHSM_CONF_TEMPLATE = fileURLToPath(
  new URL('../../softhsm/softhsm2.conf.template', import.meta.url),
);

/** Renders softhsm2.conf for a token directory (absolute path, no newline). */
export async function renderSoftHsmConf(tokenDir: string): Promise<string> {
  if (!tokenDir.startsWith('/') || /[\r\n]/.test(tokenDir)) {
    throw new HsmError(`SoftHSM token directory must be an absolute path: ${tokenDir}`);
  }
  const template = await readFile(SOFTHSM_CONF_TEMPLATE, 'utf8');
  return template.replace('{{TOKEN_DIR}}', tokenDir);
}

/** A new random PIN: 24 hex characters (SoftHSM accepts 4 to 255). */
export function randomPin(): string {
  return randomBytes(12).toString('hex');
}

/** What {@link initSoftHsmToken} created. */
export interface SoftHsmInit {
  /** the softhsm2.conf to export as SOFTHSM2_CONF */
  confPath: string;
  tokenDir: string;
}

/**
 * Creates `dir`/softhsm2.conf and `dir`/tokens, and initialises one token labelled `label`
 * with the given SO and user PINs. PKCS#11 calls are used rather than softhsm2-util so that
 * the PINs never appear on a command line.
 *
 * SoftHSM reads SOFTHSM2_CONF at C_Initialize, so this sets it in `process.env` and must run in
 * a process that has no other PKCS#11 module user (the CLI command does).
 */
export async function initSoftHsmToken(opts: {
  dir: string;
  label: string;
  userPin: string;
  soPin: string;
  module?: string;
}): Promise<SoftHsmInit> {
  // PKCS#11 token labels are 32 bytes, blank-padded.
  if (opts.label === '' || Buffer.byteLength(opts.label) > 32 || opts.label !== opts.label.trim()) {
    throw new HsmError(`token label must be 1 to 32 bytes without surrounding blanks: "${opts.label}"`);
  }
  const dir = resolve(opts.dir);
  const tokenDir = join(dir, 'tokens');
  const confPath = join(dir, 'softhsm2.conf');
  await mkdir(tokenDir, { recursive: true, mode: 0o700 });
  await writeFile(confPath, await renderSoftHsmConf(tokenDir), { mode: 0o600 });
  process.env.SOFTHSM2_CONF = confPath;

  const module = acquireModule(opts.module ?? SOFTHSM_MODULE);
  try {
    const pk = module.pkcs11;
    const labels = (slots: pkcs11js.Handle[]) =>
      slots.map((slot) => ({ slot, info: p11('C_GetTokenInfo', () => pk.C_GetTokenInfo(slot)) }));
    const all = labels(p11('C_GetSlotList', () => pk.C_GetSlotList(true)));
    if (all.some(({ info }) => tokenLabel(info) === opts.label)) {
      throw new HsmError(`a token labelled "${opts.label}" already exists in ${tokenDir}`);
    }
    const free = all.find(({ info }) => (info.flags & pkcs11js.CKF_TOKEN_INITIALIZED) === 0);
    if (!free) throw new HsmError(`SoftHSM offers no free slot in ${tokenDir}`);
    // CK_TOKEN_INFO labels are 32 blank-padded bytes; pkcs11js would pad with NULs instead.
    const padded = opts.label + ' '.repeat(32 - Buffer.byteLength(opts.label));
    p11('C_InitToken', () => pk.C_InitToken(free.slot, opts.soPin, padded));
    // SoftHSM gives the initialised token a new slot id, so it is found again by label.
    const token = labels(p11('C_GetSlotList', () => pk.C_GetSlotList(true))).find(
      ({ info }) => tokenLabel(info) === opts.label,
    );
    if (!token) throw new HsmError(`token "${opts.label}" did not appear after C_InitToken`);
    const session = p11('C_OpenSession', () =>
      pk.C_OpenSession(token.slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION),
    );
    try {
      p11('C_Login', () => pk.C_Login(session, pkcs11js.CKU_SO, opts.soPin));
      p11('C_InitPIN', () => pk.C_InitPIN(session, opts.userPin));
      p11('C_Logout', () => pk.C_Logout(session));
    } finally {
      p11('C_CloseSession', () => pk.C_CloseSession(session));
    }
  } finally {
    releaseModule(module);
  }
  return { confPath, tokenDir };
}
