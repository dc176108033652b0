import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseConfig } from '../../../src/config/load.ts';
import { configTemplate } from '../../../src/config/template.ts';

/** Uncomments every commented-out key and table header of the template. */
function uncommentAll(text: string): string {
  return text.replace(/^# (?=\[|[a-z_]+ = )/gm, '');
}

describe('configTemplate', () => {
  test('parses as written, with the placeholder chain', () => {
    const text = configTemplate({ nodeId: 'kms-1', home: '/var/lib/cometkms' });
    const c = parseConfig(text, '/etc/cometkms/config.toml', {});
    assert.equal(c.node.id, 'kms-1');
    assert.equal(c.node.home, '/var/lib/cometkms');
    assert.equal(c.cluster, undefined);
    assert.equal(c.chains[0]!.id, 'example-chain-1');
    assert.match(text, /EDIT BEFORE START/);
  });

  test('carries the given chain and escapes strings', () => {
    const text = configTemplate({
      nodeId: 'kms-2',
      home: '/srv/k "q"\u007f',
      chain: {
        id: 'cosmoshub-4',
        keyLabel: 'val\\x',
        keyType: 'secp256k1',
        protocol: 'v0.34',
        validator: 'unix:///run/v.sock',
      },
    });
    const c = parseConfig(text, '/etc/cometkms/config.toml', {});
    assert.equal(c.node.home, '/srv/k "q"\u007f');
    assert.deepEqual(c.chains, [
      {
        id: 'cosmoshub-4',
        key_label: 'val\\x',
        key_type: 'secp256k1',
        protocol: 'v0.34',
        max_height_jump: 100_000,
        validators: [{ addr: 'unix:///run/v.sock' }],
      },
    ]);
    assert.doesNotMatch(text, /EDIT BEFORE START/);
  });

  test('shows every key: uncommenting all optional ones still parses and sets each of them', () => {
    const c = parseConfig(uncommentAll(configTemplate({ nodeId: 'kms-1', home: '/h' })), '/etc/x.toml', {});
    assert.ok(c.hsm.pin_file);
    assert.deepEqual(Object.keys(c.admin).sort(), [
      'listen',
      'public_routes',
      'tls_cert_file',
      'tls_key_file',
      'token_file',
    ]);
    assert.deepEqual(Object.keys(c.cluster ?? {}).sort(), [
      'etcd_call_timeout_ms',
      'etcd_endpoints',
      'etcd_password_file',
      'etcd_prefix',
      'etcd_username',
      'forward_advertise',
      'forward_listen',
      'lease_ttl_s',
      'tls_ca_file',
      'tls_cert_file',
      'tls_key_file',
    ]);
    assert.equal(c.chains[0]!.max_height_jump, 100_000);
    assert.equal(c.chains[0]!.validators.length, 2);
  });

  test('with a cluster, the hsm and admin values of init: [cluster] uncommented, optional keys still shown', () => {
    const text = configTemplate({
      nodeId: 'kms-2',
      home: '/h',
      adminListen: '127.0.0.1:26782',
      hsm: { module: '/opt/hsm/lib.so', tokenLabel: 'tok', pinFile: '/etc/c/pin' },
      cluster: {
        etcdEndpoints: ['https://127.0.0.1:23791', 'https://127.0.0.1:23792'],
        forwardListen: '127.0.0.1:26792',
        forwardAdvertise: '127.0.0.1:26792',
        tlsCaFile: '/t/ca.pem',
        tlsCertFile: '/t/node.pem',
        tlsKeyFile: '/t/node-key.pem',
      },
    });
    const c = parseConfig(text, '/etc/x.toml', {});
    assert.equal(c.admin.listen, '127.0.0.1:26782');
    assert.deepEqual(
      [c.hsm.module, c.hsm.token_label, c.hsm.pin_file],
      ['/opt/hsm/lib.so', 'tok', '/etc/c/pin'],
    );
    assert.deepEqual(c.cluster?.etcd_endpoints, ['https://127.0.0.1:23791', 'https://127.0.0.1:23792']);
    assert.equal(c.cluster?.forward_advertise, '127.0.0.1:26792');
    assert.equal(c.cluster?.tls_key_file, '/t/node-key.pem');
    assert.equal(c.cluster?.lease_ttl_s, 1);
    assert.match(text, /^# lease_ttl_s = 1$/m);
    const all = parseConfig(uncommentAll(text), '/etc/x.toml', {});
    assert.equal(all.cluster?.etcd_username, 'cometkms');
  });
});
