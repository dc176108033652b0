import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { readSecretFile } from '../../config/secrets.ts';
import { initSoftHsmToken, randomPin, SOFTHSM_MODULE } from '../../pkcs11/softhsm.ts';

/** The PIN in `file`, or a new random one written to `fallback` (mode 0600, never overwritten). */
async function pinFrom(
  file: string | undefined,
  fallback: string,
  what: string,
): Promise<{ pin: string; file: string }> {
  if (file !== undefined) return { pin: await readSecretFile(file, what), file: resolve(file) };
  const pin = randomPin();
  try {
    await writeFile(fallback, `${pin}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    throw new Error(
      `cannot write ${what} file ${fallback}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
  return { pin, file: fallback };
}

/** `cometkms softhsm init`: a SoftHSM token for development and tests, in its own directory. */
export function registerSofthsm(program: Command): void {
  const softhsm = program
    .command('softhsm')
    .description('SoftHSM2 tokens for development and tests (not for production keys)');
  softhsm
    .command('init')
    .description('create a SoftHSM token with its own softhsm2.conf in DIR')
    .requiredOption('--dir <dir>', 'directory for softhsm2.conf, the token files and generated PIN files')
    .requiredOption('--label <label>', 'token label (at most 32 bytes)')
    .option('--pin-file <file>', 'file holding the user PIN (default: a random PIN written to DIR/user.pin)')
    .option('--so-pin-file <file>', 'file holding the SO PIN (default: a random PIN written to DIR/so.pin)')
    .option('--module <path>', 'SoftHSM PKCS#11 module', SOFTHSM_MODULE)
    .action(
      async (opts: { dir: string; label: string; pinFile?: string; soPinFile?: string; module: string }) => {
        const dir = resolve(opts.dir);
        await mkdir(dir, { recursive: true, mode: 0o700 });
        const user = await pinFrom(opts.pinFile, join(dir, 'user.pin'), 'user PIN');
        const so = await pinFrom(opts.soPinFile, join(dir, 'so.pin'), 'SO PIN');
        const { confPath, tokenDir } = await initSoftHsmToken({
          dir,
          label: opts.label,
          userPin: user.pin,
          soPin: so.pin,
          module: opts.module,
        });
        process.stdout.write(
          [
            `SoftHSM token "${opts.label}" created in ${tokenDir}`,
            `user PIN file: ${user.file}`,
            `SO PIN file:   ${so.file}`,
            'SoftHSM is a software token: use it for development and tests only.',
            'Point SoftHSM at this token directory before running cometkms:',
            `export SOFTHSM2_CONF=${confPath}`,
            '',
          ].join('\n'),
        );
      },
    );
}
