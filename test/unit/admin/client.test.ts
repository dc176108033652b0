/** The CLI side of the admin API: finding the node and its token, and the status table. */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { parseHostPort } from '../../../src/admin/address.ts';
import { resolveAdminTarget } from '../../../src/admin/client.ts';
import { formatStatus } from '../../../src/admin/status-format.ts';
import { VERSION } from '../../../src/version.ts';
import { sampleStatus } from './fake-runtime.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-admin-client-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function config(admin: string): Promise<string> {
  const path = join(dir, 'config.toml');
  await writeFile(
    path,
    [
      '[node]',
      'id = "kms-1"',
      `home = "${dir}"`,
      '[hsm]',
      'module = "/usr/lib/softhsm/libsofthsm2.so"',
      'token_label = "t"',
      '[admin]',
      admin,
      '[[chain]]',
      'id = "c"',
      'key_label = "k"',
      'key_type = "ed25519"',
      'protocol = "v0.38"',
      '[[chain.validator]]',
      'addr = "tcp://127.0.0.1:26659"',
      '',
    ].join('\n'),
  );
  return path;
}

async function secret(name: string, value: string, mode = 0o600): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, `${value}\n`);
  await chmod(path, mode);
  return path;
}

describe('resolveAdminTarget', () => {
  test('--config: admin.listen (wildcard → loopback) and admin.token_file', async () => {
    await secret('admin.token', 'tok-from-config');
    const path = await config('listen = "0.0.0.0:26999"\ntoken_file = "admin.token"');
    const t = await resolveAdminTarget({ config: path });
    assert.equal(t.baseUrl, 'http://127.0.0.1:26999');
    assert.equal(t.token, 'tok-from-config');
  });

  test('--config with TLS uses https; IPv6 wildcard → [::1]; --token-file overrides the config', async () => {
    const tok = await secret('other.token', 'tok-from-flag');
    const path = await config('listen = "[::]:26999"\ntls_cert_file = "c.pem"\ntls_key_file = "k.pem"');
    const t = await resolveAdminTarget({ config: path, tokenFile: tok });
    assert.equal(t.baseUrl, 'https://[::1]:26999');
    assert.equal(t.token, 'tok-from-flag');
  });

  test('--admin URL, default URL, and the errors', async () => {
    assert.equal(
      (await resolveAdminTarget({ admin: 'http://10.0.0.1:1234/x' })).baseUrl,
      'http://10.0.0.1:1234',
    );
    assert.deepEqual(await resolveAdminTarget({}), { baseUrl: 'http://127.0.0.1:26780' });
    await assert.rejects(resolveAdminTarget({ admin: 'nope' }), /--admin: expected a URL/);
    await assert.rejects(
      resolveAdminTarget({ admin: 'ftp://h:1' }),
      /expected an http:\/\/ or https:\/\/ URL/,
    );
    await assert.rejects(
      resolveAdminTarget({ admin: 'http://h:1', config: 'x' }),
      /either --config or --admin/,
    );
    const open = await secret('open.token', 't', 0o644);
    await assert.rejects(resolveAdminTarget({ tokenFile: open }), /chmod 600/);
  });
});

describe('parseHostPort', () => {
  test('host:port and [v6]:port', () => {
    assert.deepEqual(parseHostPort('127.0.0.1:80'), { host: '127.0.0.1', port: 80 });
    assert.deepEqual(parseHostPort('[::1]:0'), { host: '::1', port: 0 });
    assert.throws(() => parseHostPort('::1:80'), /expected host:port/);
    assert.throws(() => parseHostPort('h:70000'), /expected host:port/);
  });
});

describe('formatStatus', () => {
  test('node facts, then one row per chain with HRS, last signed, refusals, errors and validators up/total', () => {
    const text = formatStatus(sampleStatus());
    assert.match(text, /^node: +kms-1$/m);
    assert.match(text, new RegExp(`^version: +${VERSION.replaceAll('.', '\\.')}$`, 'm'));
    assert.match(text, /^mode: +cluster$/m);
    assert.match(text, /^role: +leader$/m);
    assert.match(text, /^leader: +kms-1$/m);
    assert.match(text, /^term: +42$/m);
    assert.match(text, /^members: +kms-1\*, kms-2$/m);
    assert.match(text, /^CHAIN +HEIGHT\/ROUND\/STEP +LAST SIGNED +REFUSED +ERRORS +VALIDATORS UP$/m);
    assert.match(text, /^chain-a +100\/0\/3 +2025-01-01T00:00:00\.000Z +3 \(1 double-sign\) +2 +1\/2$/m);
    assert.match(text, /^chain-b +7\/1\/2 +never +0 +0 +1\/1$/m);
  });
});
