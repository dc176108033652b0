import { accessSync, constants } from 'node:fs';
import pkcs11js from 'pkcs11js';
import { HsmError, p11 } from './errors.ts';

/**
 * The one loaded PKCS#11 module of this process. A Cryptoki library may be initialised only once
 * per process, so every {@link Hsm} shares it and it is finalised when the last one releases it.
 */
export interface LoadedModule {
  readonly path: string;
  /**
   * Slot, session and object handles obtained from it are valid only until it is finalised;
   * an {@link Hsm} holds its share until it is closed, so its handles never outlive it.
   */
  readonly pkcs11: pkcs11js.PKCS11;
}

let current: { module: LoadedModule; users: number } | undefined;

/**
 * Loads and initialises `path` (or joins the already initialised module). C_Initialize always
 * gets CKF_OS_LOCKING_OK: without it SoftHSM runs without mutexes and two signatures on the
 * libuv thread pool at once crash the process.
 */
export function acquireModule(path: string): LoadedModule {
  try {
    accessSync(path, constants.R_OK);
  } catch {
    throw new HsmError(`PKCS#11 module not found or not readable: ${path}`);
  }
  if (current) {
    if (current.module.path !== path) {
      throw new HsmError(
        `PKCS#11 module ${current.module.path} is already loaded in this process; cannot also load ${path}`,
      );
    }
    current.users++;
    return current.module;
  }
  const pkcs11 = new pkcs11js.PKCS11();
  try {
    pkcs11.load(path);
  } catch (err) {
    throw new HsmError(`cannot load PKCS#11 module ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    p11('C_Initialize', () => pkcs11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK }));
  } catch (err) {
    pkcs11.close();
    throw err;
  }
  current = { module: { path, pkcs11 }, users: 1 };
  return current.module;
}

/**
 * Gives one user's share of the module back; the last one finalises it. Callers must have
 * drained their in-flight operations and closed their sessions first: finalising while a
 * signature is running on the thread pool crashes SoftHSM.
 */
export function releaseModule(module: LoadedModule): void {
  if (!current || current.module !== module) return;
  current.users--;
  if (current.users > 0) return;
  current = undefined;
  try {
    p11('C_Finalize', () => module.pkcs11.C_Finalize());
  } finally {
    module.pkcs11.close();
  }
}

/**
 * The label of a token as a plain string. The field is 32 bytes padded with blanks, though some
 * writers (pkcs11js's C_InitToken among them) pad with NULs, so both are stripped.
 */
export function tokenLabel(info: pkcs11js.TokenInfo): string {
  return info.label.replace(/[\0 ]+$/, '');
}
