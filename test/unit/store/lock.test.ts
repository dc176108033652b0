import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { acquireHomeLock, LOCK_FILE } from '../../../src/store/lock.ts';

let home: string;
before(async () => {
  home = await mkdtemp(join(tmpdir(), 'cometkms-lock-'));
});
after(async () => {
  await rm(home, { recursive: true, force: true });
});

test("the lock is exclusive, names the holder's pid, and can be taken again after release", async () => {
  const lock = await acquireHomeLock(home);
  assert.equal((await readFile(join(home, LOCK_FILE), 'utf8')).trim(), String(process.pid));
  await assert.rejects(acquireHomeLock(home), /is in use by another cometkms process/);
  // the same home through a symlink is the same lock
  const link = `${home}-link`;
  await symlink(home, link);
  try {
    await assert.rejects(acquireHomeLock(link), /is in use/);
  } finally {
    await rm(link);
  }
  await lock.release();
  await lock.release();
  assert.equal(await readFile(join(home, LOCK_FILE), 'utf8'), '');
  const again = await acquireHomeLock(home);
  await again.release();
});

test('a SIGKILLed holder leaves no stale lock, and its pid is named while it lives', async () => {
  const script =
    "const { acquireHomeLock } = await import('./src/store/lock.ts');" +
    'await acquireHomeLock(process.argv[1]); process.stdout.write("locked\\n"); setInterval(() => {}, 1000);';
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, home], {
    cwd: join(import.meta.dirname, '../../..'),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const [chunk] = (await Promise.race([
      once(child.stdout, 'data'),
      once(child, 'exit').then(() => {
        throw new Error('lock holder exited early');
      }),
    ])) as [Buffer];
    assert.equal(chunk.toString().trim(), 'locked');
    await assert.rejects(
      acquireHomeLock(home),
      new RegExp(`in use by another cometkms process \\(pid ${child.pid}\\)`),
    );
  } finally {
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  }
  const lock = await acquireHomeLock(home);
  await lock.release();
});
