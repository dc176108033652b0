/**
 * The admin API's secrets, read the same way by `start` and `config check` (a module of its own
 * so that `config check` does not load the admin server).
 */
import { readFile } from 'node:fs/promises';
import { ConfigError } from '../../config/load.ts';
import { readSecretFile } from '../../config/secrets.ts';
import type { Config } from '../../config/types.ts';

/** The admin API's secrets: the bearer token and, when configured, its TLS certificate and key. */
export interface AdminSecrets {
  token?: string;
  tls?: { cert: Buffer; key: Buffer };
}

/**
 * Reads `admin.token_file` and `admin.tls_cert_file`/`tls_key_file` (the token and the key are
 * secret files: mode 0600). Throws a ConfigError naming the file.
 */
export async function readAdminSecrets(config: Config): Promise<AdminSecrets> {
  const token =
    config.admin.token_file === undefined
      ? undefined
      : await readSecretFile(config.admin.token_file, 'admin token');
  const tls = await adminTls(config);
  return { ...(token === undefined ? {} : { token }), ...(tls === undefined ? {} : { tls }) };
}

/** The admin API's certificate and key when configured; the key is a secret file (mode 0600). */
async function adminTls(config: Config): Promise<{ cert: Buffer; key: Buffer } | undefined> {
  const { tls_cert_file: certFile, tls_key_file: keyFile } = config.admin;
  if (certFile === undefined || keyFile === undefined) return undefined;
  let cert: Buffer;
  try {
    cert = await readFile(certFile);
  } catch (err) {
    throw new ConfigError(`admin.tls_cert_file ${certFile}: ${(err as Error).message}`);
  }
  return { cert, key: Buffer.from(await readSecretFile(keyFile, 'admin TLS key')) };
}
