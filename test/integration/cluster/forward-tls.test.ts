import assert from 'node:assert/strict';
import { once } from 'node:events';
import { chmod, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ClusterChainHandler, leaderForwardHandler } from '../../../src/cluster/cluster-handler.ts';
import { ForwardClient, ForwardServer } from '../../../src/cluster/forward.ts';
import { etcdTls, loadClusterTls } from '../../../src/cluster/tls.ts';
import type { ClusterSection } from '../../../src/config/types.ts';
import { makeTestCerts, type TestCerts } from '../../helpers/certs.ts';
import { CHAIN_ID, makeGuard, replyVote, vote, voteRequest } from '../../helpers/guard-fixtures.ts';

let certs: TestCerts;
before(async () => {
  certs = await makeTestCerts('cometkms tls test', ['kms-1', 'kms-2']);
});
after(async () => {
  await certs.cleanup();
});

function section(id: string, over: Partial<ClusterSection> = {}): ClusterSection {
  const f = certs.files(id);
  return {
    etcd_endpoints: ['https://127.0.0.1:2379'],
    lease_ttl_s: 1,
    etcd_prefix: '/cometkms/',
    etcd_call_timeout_ms: 300,
    forward_listen: '127.0.0.1:0',
    forward_advertise: '127.0.0.1:26790',
    tls_ca_file: f.caFile,
    tls_cert_file: f.certFile,
    tls_key_file: f.keyFile,
    ...over,
  };
}

test('TLS files loaded from [cluster] carry a forwarded signature end to end', async () => {
  const leaderTls = await loadClusterTls(section('kms-1'));
  const followerTls = await loadClusterTls(section('kms-2'));
  assert.deepEqual(etcdTls(leaderTls), leaderTls);
  const fx = await makeGuard();
  const server = await ForwardServer.start({
    listen: '127.0.0.1:0',
    tls: leaderTls,
    handle: leaderForwardHandler(new Map([[CHAIN_ID, { protocol: 'v0.38', guard: fx.guard }]]), {
      servesLocally: () => true,
    }),
  });
  const client = new ForwardClient({ tls: followerTls });
  try {
    client.setLeader({ nodeId: 'kms-1', advertise: server.address });
    const follower = await makeGuard();
    const handler = new ClusterChainHandler({
      chainId: CHAIN_ID,
      protocol: 'v0.38',
      guard: follower.guard,
      leadership: { servesLocally: () => false },
      forwarder: client,
    });
    assert.equal(replyVote(await handler.handle(voteRequest(vote()))).error, undefined);
    assert.equal(fx.signer.signed.length, 1);
  } finally {
    client.close();
    await server.close();
  }
});

test('[cluster] without all three TLS files is refused: forwarding is always mutual TLS', async () => {
  await assert.rejects(
    loadClusterTls(section('kms-1', { tls_key_file: undefined })),
    /tls_ca_file, tls_cert_file and tls_key_file/,
  );
  await assert.rejects(
    loadClusterTls(section('kms-1', { tls_ca_file: undefined })),
    /mutually authenticated TLS/,
  );
});

test('a TLS key that group or others can read is refused', async () => {
  const { keyFile } = certs.files('kms-1');
  await chmod(keyFile, 0o644);
  try {
    await assert.rejects(loadClusterTls(section('kms-1')), /chmod 600/);
  } finally {
    await chmod(keyFile, 0o600);
  }
});

test('files that hold no PEM certificate or key are refused with the field named', async () => {
  const junk = join(certs.dir, 'junk.pem');
  await writeFile(junk, 'not a certificate\n', { mode: 0o600 });
  await assert.rejects(
    loadClusterTls(section('kms-1', { tls_ca_file: junk })),
    /tls_ca_file .* holds no PEM certificate/,
  );
  await assert.rejects(
    loadClusterTls(section('kms-1', { tls_cert_file: junk })),
    /tls_cert_file .* holds no PEM/,
  );
  await assert.rejects(
    loadClusterTls(section('kms-1', { tls_key_file: junk })),
    /tls_key_file .* holds no PEM private key/,
  );
  await assert.rejects(
    loadClusterTls(section('kms-1', { tls_ca_file: join(certs.dir, 'missing.pem') })),
    /tls_ca_file .*missing\.pem/,
  );
});

test('close does not wait for a connection that is still in its TLS handshake', async () => {
  const server = await ForwardServer.start({
    listen: '127.0.0.1:0',
    tls: await loadClusterTls(section('kms-1')),
    handle: async () => ({ status: 'unknown_chain' }),
    // far longer than the race below: only close itself can end the half-open connection
    handshakeTimeoutMs: 60_000,
  });
  const [host, port] = server.address.split(':') as [string, string];
  const raw = connect(Number(port), host);
  await once(raw, 'connect');
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<'stuck'>((resolve) => {
    timer = setTimeout(() => resolve('stuck'), 10_000);
  });
  try {
    assert.equal(await Promise.race([server.close().then(() => 'closed' as const), stuck]), 'closed');
  } finally {
    clearTimeout(timer);
    raw.destroy();
  }
});
