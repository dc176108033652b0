import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError, loadConfig, parseConfig } from '../../../src/config/load.ts';

const FILE = '/etc/cometkms/config.toml';

const MINIMAL = `
[node]
id = "kms-1"
home = "/var/lib/cometkms"

[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "cometkms"

[[chain]]
id = "cosmoshub-4"
key_label = "val"
key_type = "ed25519"
protocol = "v0.38"

[[chain.validator]]
addr = "tcp://10.0.0.5:26659"
`;

const CLUSTER = `
[cluster]
etcd_endpoints = ["https://10.0.0.1:2379", "http://localhost:2379"]
forward_listen = "0.0.0.0:26790"
forward_advertise = "10.0.0.1:26790"
tls_ca_file = "tls/ca.pem"
tls_cert_file = "tls/node.pem"
tls_key_file = "/etc/cometkms/tls/node-key.pem"
`;

function configError(text: string, env: NodeJS.ProcessEnv = {}): string {
  try {
    parseConfig(text, FILE, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.ok(err.message.startsWith(`config ${FILE}: `), err.message);
    return err.message.slice(`config ${FILE}: `.length);
  }
  assert.fail('config was accepted');
}

describe('parseConfig', () => {
  test('a minimal config gets every default', () => {
    const c = parseConfig(MINIMAL, FILE, {});
    assert.deepEqual(c, {
      path: FILE,
      node: { id: 'kms-1', home: '/var/lib/cometkms' },
      hsm: { module: '/usr/lib/softhsm/libsofthsm2.so', profile: 'softhsm2', token_label: 'cometkms' },
      admin: { listen: '127.0.0.1:26780', public_routes: ['/healthz', '/metrics'] },
      chains: [
        {
          id: 'cosmoshub-4',
          key_label: 'val',
          key_type: 'ed25519',
          protocol: 'v0.38',
          max_height_jump: 100_000,
          validators: [{ addr: 'tcp://10.0.0.5:26659' }],
        },
      ],
    });
  });

  test('cluster defaults', () => {
    const c = parseConfig(MINIMAL + CLUSTER, FILE, {});
    assert.deepEqual(c.cluster, {
      etcd_endpoints: ['https://10.0.0.1:2379', 'http://localhost:2379'],
      lease_ttl_s: 1,
      etcd_prefix: '/cometkms/',
      etcd_call_timeout_ms: 300,
      forward_listen: '0.0.0.0:26790',
      forward_advertise: '10.0.0.1:26790',
      tls_ca_file: '/etc/cometkms/tls/ca.pem',
      tls_cert_file: '/etc/cometkms/tls/node.pem',
      tls_key_file: '/etc/cometkms/tls/node-key.pem',
    });
  });

  test('relative paths are resolved against the directory of the config file', () => {
    const text = MINIMAL.replace('"/var/lib/cometkms"', '"data"')
      .replace('"/usr/lib/softhsm/libsofthsm2.so"', '"../lib/p11.so"')
      .replace('token_label = "cometkms"', 'token_label = "cometkms"\npin_file = "secrets/pin"');
    const c = parseConfig(text, FILE, {});
    assert.equal(c.node.home, '/etc/cometkms/data');
    assert.equal(c.hsm.module, '/etc/lib/p11.so');
    assert.equal(c.hsm.pin_file, '/etc/cometkms/secrets/pin');
  });

  test('environment overrides replace node.id, node.home and admin.listen', () => {
    const c = parseConfig(MINIMAL, FILE, {
      COMETKMS_NODE_ID: 'kms-9',
      COMETKMS_HOME: '/srv/kms',
      COMETKMS_ADMIN_LISTEN: '127.0.0.1:0',
    });
    assert.equal(c.node.id, 'kms-9');
    assert.equal(c.node.home, '/srv/kms');
    assert.equal(c.admin.listen, '127.0.0.1:0');
    assert.match(configError(MINIMAL, { COMETKMS_NODE_ID: 'bad id' }), /^node\.id: /);
  });

  test('several chains and validators, unix and IPv6 addresses', () => {
    const text = `${MINIMAL}
[[chain.validator]]
addr = "unix:///run/cometbft/privval.sock"
[[chain.validator]]
addr = "tcp://[::1]:26659"

[[chain]]
id = "osmosis-1"
key_label = "osmo"
key_type = "secp256k1"
protocol = "v1.0"
max_height_jump = 100
[[chain.validator]]
addr = "tcp://node-2.example:26659"
`;
    const c = parseConfig(text, FILE, {});
    assert.equal(c.chains.length, 2);
    assert.equal(c.chains[0]!.validators.length, 3);
    assert.deepEqual(c.chains[1], {
      id: 'osmosis-1',
      key_label: 'osmo',
      key_type: 'secp256k1',
      protocol: 'v1.0',
      max_height_jump: 100,
      validators: [{ addr: 'tcp://node-2.example:26659' }],
    });
  });

  // Each case: a broken config and the start of the error after "config <file>: ", which must
  // name the offending key path.
  const cases: [string, string, string][] = [
    ['TOML syntax', `${MINIMAL}\nbroken = [`, 'invalid TOML at line'],
    ['unknown top-level key', `${MINIMAL}\n[extra]\n`, 'extra: unknown key'],
    ['unknown key in a section', MINIMAL.replace('[hsm]', '[hsm]\npin = "1234"'), 'hsm.pin: unknown key'],
    ['unknown key in a validator', `${MINIMAL}port = 1\n`, 'chain[0].validator[0].port: unknown key'],
    ['missing [node]', MINIMAL.replace(/\[node\][^[]*/, ''), 'node: missing section'],
    ['missing node.id', MINIMAL.replace('id = "kms-1"', ''), 'node.id: missing required key'],
    ['bad node id', MINIMAL.replace('"kms-1"', '"kms 1"'), 'node.id: expected a node id'],
    [
      'wrong type',
      MINIMAL.replace('token_label = "cometkms"', 'token_label = 7'),
      'hsm.token_label: expected a string',
    ],
    [
      'empty string',
      MINIMAL.replace('token_label = "cometkms"', 'token_label = ""'),
      'hsm.token_label: must not be empty',
    ],
    ['section as value', `admin = 3\n${MINIMAL}`, 'admin: expected a table'],
    [
      'bad key_type',
      MINIMAL.replace('"ed25519"', '"rsa"'),
      'chain[0].key_type: expected one of "ed25519", "secp256k1"',
    ],
    ['bad protocol', MINIMAL.replace('"v0.38"', '"v0.39"'), 'chain[0].protocol: expected one of'],
    ['no chain', MINIMAL.replace(/\[\[chain\]\][\s\S]*/, ''), 'chain: at least one [[chain]] is required'],
    [
      'chain without validator',
      MINIMAL.replace(/\[\[chain\.validator\]\][\s\S]*/, ''),
      'chain[0].validator: at least one [[chain.validator]] is required',
    ],
    [
      'bad validator addr',
      MINIMAL.replace('tcp://10.0.0.5:26659', 'foo'),
      'chain[0].validator[0].addr: expected tcp://host:port or unix:///path, got "foo"',
    ],
    [
      'relative unix path',
      MINIMAL.replace('tcp://10.0.0.5:26659', 'unix://run/x.sock'),
      'chain[0].validator[0].addr',
    ],
    ['port out of range', MINIMAL.replace('26659', '70000'), 'chain[0].validator[0].addr'],
    ['port 0 to dial', MINIMAL.replace(':26659', ':0'), 'chain[0].validator[0].addr'],
    [
      'duplicate validator',
      `${MINIMAL}[[chain.validator]]\naddr = "tcp://10.0.0.5:26659"\n`,
      'chain[0].validator[1].addr: duplicate validator address',
    ],
    [
      'duplicate chain id',
      `${MINIMAL}[[chain]]\nid = "cosmoshub-4"\nkey_label = "k"\nkey_type = "ed25519"\nprotocol = "v0.34"\n[[chain.validator]]\naddr = "tcp://h:1"\n`,
      'chain[1].id: duplicate chain id "cosmoshub-4" (also chain[0])',
    ],
    [
      'chain id too long',
      MINIMAL.replace('"cosmoshub-4"', `"${'c'.repeat(51)}"`),
      'chain[0].id: expected at most 50',
    ],
    [
      'max_height_jump 0',
      MINIMAL.replace('protocol = "v0.38"', 'protocol = "v0.38"\nmax_height_jump = 0'),
      'chain[0].max_height_jump: must be between 1',
    ],
    [
      'bad admin listen',
      `${MINIMAL}\n[admin]\nlisten = "localhost"\n`,
      'admin.listen: expected host:port, got "localhost"',
    ],
    [
      'bad public route',
      `${MINIMAL}\n[admin]\npublic_routes = ["healthz"]\n`,
      'admin.public_routes[0]: expected a route',
    ],
    [
      'public_routes not an array',
      `${MINIMAL}\n[admin]\npublic_routes = "/x"\n`,
      'admin.public_routes: expected an array',
    ],
    [
      'admin tls half',
      `${MINIMAL}\n[admin]\ntls_cert_file = "c.pem"\n`,
      'admin.tls_key_file: required together with tls_cert_file',
    ],
    ['lease_ttl_s 0', `${MINIMAL}${CLUSTER}lease_ttl_s = 0\n`, 'cluster.lease_ttl_s: must be between 1'],
    [
      'lease_ttl_s float',
      `${MINIMAL}${CLUSTER}lease_ttl_s = 1.5\n`,
      'cluster.lease_ttl_s: expected an integer',
    ],
    [
      'lease_ttl_s string',
      `${MINIMAL}${CLUSTER}lease_ttl_s = "1s"\n`,
      'cluster.lease_ttl_s: expected an integer',
    ],
    [
      'bad etcd endpoint',
      MINIMAL + CLUSTER.replace('http://localhost:2379', 'localhost:2379'),
      'cluster.etcd_endpoints[1]: expected http://host:port or https://host:port, got "localhost:2379"',
    ],
    [
      'no etcd endpoints',
      MINIMAL + CLUSTER.replace(/\[".*"\]/, '[]'),
      'cluster.etcd_endpoints: at least one endpoint',
    ],
    [
      'bad etcd prefix',
      `${MINIMAL}${CLUSTER}etcd_prefix = "kms"\n`,
      'cluster.etcd_prefix: expected a key prefix',
    ],
    [
      'call timeout 0',
      `${MINIMAL}${CLUSTER}etcd_call_timeout_ms = 0\n`,
      'cluster.etcd_call_timeout_ms: must be between 1',
    ],
    [
      'missing forward_listen',
      MINIMAL + CLUSTER.replace(/forward_listen.*\n/, ''),
      'cluster.forward_listen: missing required key',
    ],
    [
      'wildcard advertise',
      MINIMAL + CLUSTER.replace('10.0.0.1:26790', '0.0.0.0:26790'),
      'cluster.forward_advertise: must be an address other nodes can dial',
    ],
    ...['tls_ca_file', 'tls_cert_file', 'tls_key_file'].map((key): [string, string, string] => [
      `cluster without ${key}`,
      MINIMAL + CLUSTER.replace(new RegExp(`${key} = .*\n`), ''),
      `cluster.${key}: required: nodes forward requests to the leader over mutual TLS`,
    ]),
    [
      'etcd user without password',
      `${MINIMAL}${CLUSTER}etcd_username = "u"\n`,
      'cluster.etcd_password_file: required together',
    ],
    [
      'a date where a string belongs',
      MINIMAL.replace('"kms-1"', '2024-01-01'),
      'node.id: expected a string, got a date',
    ],
  ];
  for (const [name, text, expected] of cases) {
    test(`error names the key: ${name}`, () => {
      const msg = configError(text);
      assert.ok(msg.startsWith(expected), `"${msg}" should start with "${expected}"`);
    });
  }
});

describe('loadConfig', () => {
  test('reads a file and resolves its relative paths; a missing file is a ConfigError', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cometkms-config-'));
    try {
      const path = join(dir, 'config.toml');
      await writeFile(path, MINIMAL.replace('"/var/lib/cometkms"', '"./home"'));
      const c = await loadConfig(path, {});
      assert.equal(c.path, path);
      assert.equal(c.node.home, join(dir, 'home'));
      await assert.rejects(loadConfig(join(dir, 'nope.toml'), {}), (e: Error) => {
        assert.ok(e instanceof ConfigError);
        assert.match(e.message, /nope\.toml: cannot read/);
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
