import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ConfigError } from '../../../src/config/load.ts';
import { readSecretFile } from '../../../src/config/secrets.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-secret-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('reads a 0600 secret and drops one trailing newline', async () => {
  const p = join(dir, 'pin');
  await writeFile(p, '1234 \n', { mode: 0o600 });
  assert.equal(await readSecretFile(p, 'HSM PIN'), '1234 ');
});

test('refuses a secret readable by group or others, telling to chmod 600', async () => {
  const p = join(dir, 'open');
  await writeFile(p, 'x', { mode: 0o644 });
  await assert.rejects(readSecretFile(p, 'admin token'), (e: Error) => {
    assert.ok(e instanceof ConfigError);
    assert.equal(
      e.message,
      `admin token file ${p} is accessible by group or others (mode 0644): run \`chmod 600 ${p}\``,
    );
    return true;
  });
});

test('refuses a missing or empty secret', async () => {
  await assert.rejects(readSecretFile(join(dir, 'none'), 'HSM PIN'), /HSM PIN file .*none does not exist/);
  const p = join(dir, 'empty');
  await writeFile(p, '\n', { mode: 0o600 });
  await assert.rejects(readSecretFile(p, 'HSM PIN'), /HSM PIN file .*empty is empty/);
});
