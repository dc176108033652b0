/**
 * The cluster's TLS material, read from the files `[cluster]` names: one CA and one node
 * certificate serve both the etcd client connections and forwarding between nodes (mTLS).
 */
import { readFile } from 'node:fs/promises';
import { ConfigError } from '../config/load.ts';
import { readSecretFile } from '../config/secrets.ts';
import type { ClusterSection } from '../config/types.ts';
import type { EtcdClientOptions } from './etcd-client.ts';
import type { ForwardTls } from './forward.ts';

/**
 * Reads the CA, certificate and key of `[cluster]`. Forwarding is always mutually authenticated,
 * so all three are required. The key goes through `readSecretFile`: a key file that group or
 * others can read is refused (`chmod 600`).
 */
export async function loadClusterTls(section: ClusterSection): Promise<ForwardTls> {
  const { tls_ca_file: caFile, tls_cert_file: certFile, tls_key_file: keyFile } = section;
  if (caFile === undefined || certFile === undefined || keyFile === undefined) {
    throw new ConfigError(
      '[cluster] needs tls_ca_file, tls_cert_file and tls_key_file: nodes forward requests to the ' +
        'leader over mutually authenticated TLS (make them with deploy/tls/make-certs.sh)',
    );
  }
  const ca = await readPem(caFile, 'tls_ca_file', 'CERTIFICATE');
  const cert = await readPem(certFile, 'tls_cert_file', 'CERTIFICATE');
  const key = Buffer.from(`${await readSecretFile(keyFile, 'cluster TLS key (tls_key_file)')}\n`);
  if (!key.includes('PRIVATE KEY-----')) {
    throw new ConfigError(`[cluster] tls_key_file ${keyFile} holds no PEM private key`);
  }
  return { ca, cert, key };
}

/** The `tls` option of the etcd clients: the same CA, and the node certificate as client cert. */
export function etcdTls(t: ForwardTls): NonNullable<EtcdClientOptions['tls']> {
  return { ca: t.ca, cert: t.cert, key: t.key };
}

async function readPem(path: string, field: string, label: string): Promise<Buffer> {
  let pem: Buffer;
  try {
    pem = await readFile(path);
  } catch (err) {
    throw new ConfigError(`[cluster] ${field} ${path}: ${(err as Error).message}`);
  }
  if (!pem.includes(`-----BEGIN ${label}-----`)) {
    throw new ConfigError(`[cluster] ${field} ${path} holds no PEM ${label.toLowerCase()}`);
  }
  return pem;
}
