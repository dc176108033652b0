/**
 * deploy/tls/make-certs.sh against the real openssl: the certificates verify, carry the SANs,
 * usages and key modes promised, refuse to overwrite, and work for a real mutual-TLS handshake
 * in Node, where a certificate of another CA is rejected.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';

const SCRIPT = join(import.meta.dirname, '../../../deploy/tls/make-certs.sh');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function ok(r: Run): Run {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

const makeCerts = (...args: string[]) => run('bash', [SCRIPT, ...args]);
const certText = async (file: string) =>
  ok(await run('openssl', ['x509', '-in', file, '-noout', '-text'])).stdout;

let dir: string;
let out: string;
let other: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-certs-'));
  out = join(dir, 'cluster');
  other = join(dir, 'other');
  ok(
    await makeCerts(
      '--out',
      out,
      '--ca-name',
      'CometKMS test CA',
      '--node',
      'kms-1:127.0.0.1,10.0.0.1:kms-1.example.com',
      '--node',
      'kms-2:127.0.0.1,[::1]',
      '--days',
      '30',
    ),
  );
  ok(await makeCerts('--out', other, '--ca-name', 'Another CA', '--node', 'kms-1:127.0.0.1'));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('make-certs.sh output', () => {
  test('every node certificate verifies against the CA, and not against another CA', async () => {
    for (const id of ['kms-1', 'kms-2']) {
      ok(await run('openssl', ['verify', '-CAfile', join(out, 'ca.pem'), join(out, id, 'node.pem')]));
      const foreign = await run('openssl', [
        'verify',
        '-CAfile',
        join(other, 'ca.pem'),
        join(out, id, 'node.pem'),
      ]);
      assert.notEqual(foreign.code, 0);
    }
  });

  test('node certificates: CN = node id, SANs, P-256/SHA-256, server and client usage, not a CA', async () => {
    const t1 = await certText(join(out, 'kms-1', 'node.pem'));
    assert.match(t1, /Subject: CN ?= ?kms-1\n/);
    assert.match(t1, /Issuer: CN ?= ?CometKMS test CA\n/);
    assert.match(t1, /IP Address:127\.0\.0\.1, IP Address:10\.0\.0\.1, DNS:kms-1\.example\.com/);
    assert.match(t1, /NIST CURVE: P-256/);
    assert.match(t1, /Signature Algorithm: ecdsa-with-SHA256/);
    assert.match(t1, /TLS Web Server Authentication, TLS Web Client Authentication/);
    assert.match(t1, /Basic Constraints: critical\n\s+CA:FALSE/);
    const t2 = await certText(join(out, 'kms-2', 'node.pem'));
    assert.match(t2, /Subject: CN ?= ?kms-2\n/);
    assert.match(t2, /IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1\n/);
    const ca = await certText(join(out, 'ca.pem'));
    assert.match(ca, /Basic Constraints: critical\n\s+CA:TRUE, pathlen:0/);
    assert.match(ca, /Key Usage: critical\n\s+Certificate Sign, CRL Sign/);
  });

  test('keys are 0600 in 0700 directories; certificates are world-readable', async () => {
    const mode = async (p: string) => (await stat(p)).mode & 0o777;
    assert.equal(await mode(join(out, 'ca-key.pem')), 0o600);
    assert.equal(await mode(out), 0o700);
    for (const id of ['kms-1', 'kms-2']) {
      assert.equal(await mode(join(out, id)), 0o700);
      assert.equal(await mode(join(out, id, 'node-key.pem')), 0o600);
      assert.equal(await mode(join(out, id, 'node.pem')), 0o644);
      assert.deepEqual(await readFile(join(out, id, 'ca.pem')), await readFile(join(out, 'ca.pem')));
    }
    // no work files are left behind
    assert.deepEqual((await readdir(out)).sort(), ['ca-key.pem', 'ca.pem', 'kms-1', 'kms-2']);
  });
});

describe('make-certs.sh refusals', () => {
  test('an existing CA is not overwritten without --force, and nothing is written', async () => {
    const caBefore = await readFile(join(out, 'ca.pem'));
    const r = await makeCerts('--out', out, '--ca-name', 'New CA', '--node', 'kms-9:127.0.0.1');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /a CA already exists/);
    assert.deepEqual(await readFile(join(out, 'ca.pem')), caBefore);
    await assert.rejects(stat(join(out, 'kms-9')));
  });

  test('--reuse-ca adds a node with the same CA; an existing node needs --force', async () => {
    const caBefore = await readFile(join(out, 'ca.pem'));
    ok(await makeCerts('--out', out, '--reuse-ca', '--node', 'kms-3:127.0.0.1'));
    assert.deepEqual(await readFile(join(out, 'ca.pem')), caBefore);
    ok(await run('openssl', ['verify', '-CAfile', join(out, 'ca.pem'), join(out, 'kms-3', 'node.pem')]));
    const again = await makeCerts('--out', out, '--reuse-ca', '--node', 'kms-3:127.0.0.1');
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /kms-3\/node\.pem exists: use --force/);
    const oldCert = await readFile(join(out, 'kms-3', 'node.pem'));
    ok(await makeCerts('--out', out, '--reuse-ca', '--force', '--node', 'kms-3:127.0.0.1'));
    assert.notDeepEqual(await readFile(join(out, 'kms-3', 'node.pem')), oldCert);
  });

  test('bad arguments are refused with a message', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--ca-name', 'x', '--node', 'a:127.0.0.1'], /--out DIR is required/],
      [['--out', join(dir, 'x'), '--node', 'a:127.0.0.1'], /--ca-name NAME is required/],
      [['--out', join(dir, 'x'), '--ca-name', 'x'], /at least one --node/],
      [['--out', join(dir, 'x'), '--ca-name', 'x', '--node', 'a:300.0.0.1'], /not an IPv4 address/],
      [['--out', join(dir, 'x'), '--ca-name', 'x', '--node', 'a b:127.0.0.1'], /node id must be/],
      [['--out', join(dir, 'x'), '--ca-name', 'x', '--node', 'a:'], /at least one IP or DNS name/],
      [['--out', join(dir, 'x'), '--ca-name', 'x', '--node', 'a:1.2.3.4', '--node', 'a:1.2.3.5'], /twice/],
      [['--out', join(dir, 'x'), '--ca-name', 'x', '--node', 'a:1.2.3.4', '--days', '0'], /--days/],
      [['--out', join(dir, 'x'), '--reuse-ca', '--node', 'a:1.2.3.4'], /--reuse-ca: no CA/],
    ];
    for (const [args, message] of cases) {
      const r = await makeCerts(...args);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, message, args.join(' '));
    }
    await assert.rejects(stat(join(dir, 'x')));
  });
});

describe('mutual TLS with the certificates', { timeout: 30_000 }, () => {
  async function tlsFiles(base: string, id: string) {
    const [ca, cert, key] = await Promise.all(
      ['ca.pem', 'node.pem', 'node-key.pem'].map((f) => readFile(join(base, id, f))),
    );
    return { ca: ca!, cert: cert!, key: key! };
  }

  /**
   * A server that requires a client certificate of the cluster CA. `peers` lists the CN of
   * every client it accepted, `rejected` counts handshakes it refused.
   */
  async function startServer() {
    const seen = { peers: [] as string[], rejected: 0 };
    const server = tls.createServer(
      { ...(await tlsFiles(out, 'kms-1')), requestCert: true, rejectUnauthorized: true },
      (socket) => {
        // A certificate has one CN here; the typings allow a list for multi-valued subjects.
        seen.peers.push(String(socket.getPeerCertificate().subject.CN));
        socket.end('hello');
      },
    );
    server.on('tlsClientError', () => {
      seen.rejected++;
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return { server, port: (server.address() as AddressInfo).port, seen };
  }

  /**
   * Connects with `files` and reads until the connection closes. With TLS 1.3 the client
   * finishes its side before the server has checked the client certificate, so a refused client
   * sees a closed connection rather than an error: `data` tells the two apart.
   */
  function connect(
    port: number,
    files: { ca: Buffer; cert: Buffer; key: Buffer },
  ): Promise<{ data: string; error?: Error }> {
    return new Promise((resolve) => {
      let data = '';
      let error: Error | undefined;
      const socket = tls.connect({ host: '127.0.0.1', port, ...files });
      socket.setEncoding('utf8');
      socket.on('data', (d) => {
        data += d;
      });
      socket.on('error', (err) => {
        error = err;
      });
      socket.on('close', () => resolve(error ? { data, error } : { data }));
      socket.setTimeout(10_000, () => socket.destroy(new Error('timeout')));
    });
  }

  test('two nodes of the cluster CA complete a mutual handshake on 127.0.0.1', async () => {
    const { server, port, seen } = await startServer();
    try {
      assert.deepEqual(await connect(port, await tlsFiles(out, 'kms-2')), { data: 'hello' });
      assert.deepEqual(seen, { peers: ['kms-2'], rejected: 0 });
    } finally {
      server.close();
    }
  });

  test('a client certificate of another CA is rejected by the server', async () => {
    const { server, port, seen } = await startServer();
    try {
      // The client trusts the server (cluster CA) but presents a certificate of another CA.
      const foreign = await tlsFiles(other, 'kms-1');
      const refused = once(server, 'tlsClientError');
      const r = await connect(port, { ...foreign, ca: (await tlsFiles(out, 'kms-2')).ca });
      await refused;
      assert.equal(r.data, '');
      assert.deepEqual(seen, { peers: [], rejected: 1 });
    } finally {
      server.close();
    }
  });

  test('a client of another CA does not accept the cluster server', async () => {
    const { server, port, seen } = await startServer();
    try {
      const r = await connect(port, await tlsFiles(other, 'kms-1'));
      assert.equal(r.data, '');
      assert.match(r.error?.message ?? '', /self[- ]signed|unable to verify|certificate/i);
      assert.deepEqual(seen.peers, []);
    } finally {
      server.close();
    }
  });
});
