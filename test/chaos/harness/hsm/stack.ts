/**
 * The PKCS#11 stack a chaos node signs through: cometkms → fault shim → pkcs11-spy → SoftHSM.
 * The shim is compiled here from fault-shim.c (gcc, the OASIS headers shipped in pkcs11js) into
 * the run directory; the spy is Debian's opensc-pkcs11 (scripts/install-deps.sh installs both).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Debian's pkcs11-spy module (package opensc-pkcs11). */
export const SPY_MODULE = '/usr/lib/x86_64-linux-gnu/pkcs11-spy.so';

const SHIM_SOURCE = fileURLToPath(new URL('./fault-shim.c', import.meta.url));
const PKCS11_HEADERS = fileURLToPath(
  new URL('../../../../node_modules/pkcs11js/includes/pkcs11', import.meta.url),
);

/** Compiles the fault shim into `dir` and returns its path. */
export async function buildFaultShim(dir: string): Promise<string> {
  const out = join(dir, 'chaos-fault-shim.so');
  await run(
    'gcc',
    ['-shared', '-fPIC', '-O2', '-Wall', '-Werror', '-I', PKCS11_HEADERS, '-o', out, SHIM_SOURCE, '-ldl'],
    {
      timeout: 60_000,
    },
  );
  return out;
}

/** One node's control over its HSM faults (the shim's control file). */
export class HsmFaults {
  private closes = 0;
  constructor(readonly controlFile: string) {}

  async pass(): Promise<void> {
    await writeFile(this.controlFile, '');
  }
  /** every C_SignInit fails with `rv` (default CKR_DEVICE_ERROR = 0x30) */
  async fail(rv = 0x30): Promise<void> {
    await writeFile(this.controlFile, `fail ${rv}\n`);
  }
  async delay(ms: number): Promise<void> {
    await writeFile(this.controlFile, `delay ${Math.round(ms)}\n`);
  }
  /** the next C_Sign finds its session closed */
  async closeSession(): Promise<void> {
    await writeFile(this.controlFile, `close ${++this.closes}\n`);
  }
}

/**
 * The environment that routes a node's `[hsm] module = <shim>` through the spy to SoftHSM,
 * logging every call to `spyLog`.
 */
export function hsmStackEnv(opts: {
  softhsmModule: string;
  spyLog: string;
  controlFile: string;
}): Record<string, string> {
  if (!existsSync(SPY_MODULE)) {
    throw new Error(`${SPY_MODULE} is missing: install Debian's opensc-pkcs11 (scripts/install-deps.sh)`);
  }
  return {
    CHAOS_SHIM_NEXT: SPY_MODULE,
    CHAOS_SHIM_CONTROL: opts.controlFile,
    PKCS11SPY: opts.softhsmModule,
    PKCS11SPY_OUTPUT: opts.spyLog,
  };
}
