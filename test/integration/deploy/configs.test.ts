/**
 * Every example config under deploy/ parses with the real loader (no environment overrides),
 * and the per-node files of one cluster agree on everything but the node's own identity.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseConfig } from '../../../src/config/load.ts';
import type { Config } from '../../../src/config/types.ts';

const DEPLOY = join(import.meta.dirname, '../../../deploy');

async function load(file: string): Promise<Config> {
  return parseConfig(await readFile(file, 'utf8'), file, {});
}

/** The TOML files embedded in the k8s ConfigMap (`  name.toml: |` followed by 4-space lines). */
async function configMapFiles(): Promise<Map<string, string>> {
  const lines = (await readFile(join(DEPLOY, 'k8s/cometkms.yaml'), 'utf8')).split('\n');
  const files = new Map<string, string>();
  let current: string[] | undefined;
  for (const line of lines) {
    const head = /^ {2}([A-Za-z0-9.-]+\.toml): \|$/.exec(line);
    if (head) {
      assert.ok(!files.has(head[1]!), `${head[1]} appears twice in the ConfigMap`);
      current = [];
      files.set(head[1]!, '');
      continue;
    }
    if (current && line.startsWith('    ')) {
      current.push(line.slice(4));
      files.set([...files.keys()].at(-1)!, `${current.join('\n')}\n`);
    } else {
      current = undefined;
    }
  }
  return files;
}

/** The config without what differs per node (id, forward addresses, own TLS files, path). */
function shared(c: Config): unknown {
  const { path: _path, node, cluster, ...rest } = c;
  const { forward_listen: _l, forward_advertise: _a, tls_cert_file: _c, tls_key_file: _k, ...cl } = cluster!;
  return { ...rest, home: node.home, cluster: cl };
}

/**
 * Checks one cluster's configs: distinct ids and advertise addresses, TLS on, all else equal.
 * The admin API is on loopback, except where a NetworkPolicy guards it (`adminListen`).
 */
function checkCluster(
  configs: Config[],
  ids: string[],
  advertise: string[],
  adminListen: RegExp = /^127\.0\.0\.1:/,
): void {
  assert.deepEqual(
    configs.map((c) => c.node.id),
    ids,
  );
  assert.deepEqual(
    configs.map((c) => c.cluster?.forward_advertise),
    advertise,
  );
  for (const c of configs) {
    const cl = c.cluster!;
    assert.ok(cl.etcd_endpoints.length === 3 && cl.etcd_endpoints.every((e) => e.startsWith('https://')));
    assert.ok(cl.tls_ca_file && cl.tls_cert_file && cl.tls_key_file, `${c.path}: TLS files`);
    assert.equal(cl.lease_ttl_s, 1);
    assert.ok(c.hsm.pin_file && c.admin.token_file, `${c.path}: secrets come from files`);
    assert.match(c.admin.listen, adminListen, `${c.path}: admin API address`);
    assert.deepEqual(shared(c), shared(configs[0]!), `${c.path} differs from ${configs[0]!.path}`);
  }
}

describe('deploy/config examples', () => {
  test('kms-1..3: a 3-host cluster on 10.0.0.1-3 with TLS everywhere', async () => {
    const configs = await Promise.all([1, 2, 3].map((n) => load(join(DEPLOY, `config/kms-${n}.toml`))));
    checkCluster(
      configs,
      ['kms-1', 'kms-2', 'kms-3'],
      ['10.0.0.1:26790', '10.0.0.2:26790', '10.0.0.3:26790'],
    );
    const c = configs[0]!;
    assert.deepEqual(c.cluster!.etcd_endpoints, [
      'https://10.0.0.1:2379',
      'https://10.0.0.2:2379',
      'https://10.0.0.3:2379',
    ]);
    assert.deepEqual(
      c.chains.map((ch) => [ch.id, ch.protocol, ch.key_type, ch.validators.map((v) => v.addr)]),
      [
        ['cosmoshub-4', 'v0.38', 'ed25519', ['tcp://10.0.0.5:26659', 'unix:///run/cometbft/privval.sock']],
        ['example-v1-1', 'v1.0', 'secp256k1', ['tcp://10.0.0.6:26659']],
      ],
    );
  });

  test('single-node.toml: no [cluster] section', async () => {
    const c = await load(join(DEPLOY, 'config/single-node.toml'));
    assert.equal(c.cluster, undefined);
    assert.equal(c.chains[0]?.id, 'cosmoshub-4');
    assert.ok(c.hsm.pin_file && c.admin.token_file);
  });
});

describe('container and Kubernetes configs', () => {
  test('compose: kms-1..3 reach etcd-1..3 by service name', async () => {
    const configs = await Promise.all(
      [1, 2, 3].map((n) => load(join(DEPLOY, `container/config/kms-${n}.toml`))),
    );
    checkCluster(configs, ['kms-1', 'kms-2', 'kms-3'], ['kms-1:26790', 'kms-2:26790', 'kms-3:26790']);
    assert.deepEqual(configs[0]!.cluster!.etcd_endpoints, [
      'https://etcd-1:2379',
      'https://etcd-2:2379',
      'https://etcd-3:2379',
    ]);
  });

  test('k8s ConfigMap: one config per pod ordinal, named after the pod', async () => {
    const files = await configMapFiles();
    assert.deepEqual([...files.keys()], ['cometkms-0.toml', 'cometkms-1.toml', 'cometkms-2.toml']);
    const configs = [...files].map(([name, text]) => parseConfig(text, `/etc/cometkms/config/${name}`, {}));
    const pods = ['cometkms-0', 'cometkms-1', 'cometkms-2'];
    // On the pod IP for Prometheus; the manifest's NetworkPolicy admits only the monitoring
    // namespace to it (test/integration/deploy/k8s.test.ts).
    checkCluster(
      configs,
      pods,
      pods.map((p) => `${p}.cometkms.cometkms.svc:26790`),
      /^0\.0\.0\.0:26780$/,
    );
    configs.forEach((c, i) => {
      assert.equal(c.cluster!.tls_cert_file, `/etc/cometkms/tls/cometkms-${i}.pem`);
      assert.equal(c.cluster!.tls_key_file, `/etc/cometkms/tls/cometkms-${i}-key.pem`);
    });
  });
});
