import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { ForwardTls } from '../../src/cluster/forward.ts';

const run = promisify(execFile);
const MAKE_CERTS = resolve(import.meta.dirname, '../../deploy/tls/make-certs.sh');

/** One node's files as make-certs.sh writes them (key 0600). */
export interface NodeCertFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** A CA and node certificates (SAN 127.0.0.1) made by deploy/tls/make-certs.sh in a temp dir. */
export interface TestCerts {
  dir: string;
  files(nodeId: string): NodeCertFiles;
  /** the PEM material of `nodeId` */
  tls(nodeId: string): Promise<ForwardTls>;
  cleanup(): Promise<void>;
}

/** Makes a CA named `caName` and one certificate per node id, all valid for 127.0.0.1. */
export async function makeTestCerts(caName: string, nodeIds: string[]): Promise<TestCerts> {
  const dir = await mkdtemp(join(tmpdir(), 'cometkms-certs-'));
  try {
    await run(
      'bash',
      [
        MAKE_CERTS,
        '--out',
        join(dir, 'pki'),
        '--ca-name',
        caName,
        '--days',
        '2',
        ...nodeIds.flatMap((id) => ['--node', `${id}:127.0.0.1`]),
      ],
      { timeout: 30_000 },
    );
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const files = (id: string): NodeCertFiles => ({
    caFile: join(dir, 'pki', id, 'ca.pem'),
    certFile: join(dir, 'pki', id, 'node.pem'),
    keyFile: join(dir, 'pki', id, 'node-key.pem'),
  });
  return {
    dir,
    files,
    async tls(id) {
      const f = files(id);
      const [ca, cert, key] = await Promise.all([
        readFile(f.caFile),
        readFile(f.certFile),
        readFile(f.keyFile),
      ]);
      return { ca, cert, key };
    },
    async cleanup() {
      await rm(dir, { recursive: true, force: true });
    },
  };
}
