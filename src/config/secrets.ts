import { readFile, stat } from 'node:fs/promises';
import { ConfigError } from './load.ts';

/**
 * Reads a secret (HSM PIN, admin token, etcd password) from the file the config names. Secrets
 * are never config values, and a secret file that other users can read is refused rather than
 * used: the operator must `chmod 600` it. One trailing newline (as editors and `echo` add) is
 * removed; an empty secret is an error. `what` names the secret in errors, e.g. "HSM PIN".
 */
export async function readSecretFile(path: string, what: string): Promise<string> {
  let mode: number;
  try {
    mode = (await stat(path)).mode;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(
      code === 'ENOENT'
        ? `${what} file ${path} does not exist`
        : `${what} file ${path}: ${(err as Error).message}`,
    );
  }
  if ((mode & 0o077) !== 0) {
    const octal = (mode & 0o777).toString(8).padStart(4, '0');
    throw new ConfigError(
      `${what} file ${path} is accessible by group or others (mode ${octal}): run \`chmod 600 ${path}\``,
    );
  }
  const secret = (await readFile(path, 'utf8')).replace(/\r?\n$/, '');
  if (secret.length === 0) throw new ConfigError(`${what} file ${path} is empty`);
  return secret;
}
