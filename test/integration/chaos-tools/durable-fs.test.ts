/**
 * The chaos harness's power-loss and disk-full preload has teeth: in a real child process,
 * SIGKILLed and then "powered back on" from the durable image,
 *   - a write without fsync is lost (a plain SIGKILL would have kept it in the page cache);
 *   - a rename whose directory was never fsynced is lost, the file's fsynced content is not;
 *   - the product's writeFileDurable (temp → fsync → rename → fsync dir) survives;
 *   - with the disk-full flag, writes under the root fail with ENOSPC.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { applyDurableImage, durableEnv } from '../../chaos/harness/state/durable-image.ts';

const DURABLE_TS = fileURLToPath(new URL('../../../src/store/durable.ts', import.meta.url));

describe('durable-fs preload (power loss, disk full)', () => {
  let dir: string;
  let root: string;
  let image: string;
  let flag: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'chaos-durable-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Runs `code` (ESM) in a child with the preload, waits for "done", then SIGKILLs it (the crash). */
  async function crashAfter(code: string): Promise<string> {
    root = join(dir, `root-${Math.random().toString(16).slice(2)}`);
    image = `${root}.image`;
    flag = `${root}.full`;
    await mkdir(root);
    await writeFile(join(root, 'old.json'), 'old');
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      env: { ...process.env, ...durableEnv({ root, image, enospcFlag: flag }), ROOT: root, FLAG: flag },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const deadline = Date.now() + 20_000;
    while (!out.includes('done') && child.exitCode === null) {
      assert.ok(Date.now() < deadline, `child never finished: ${err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    await exited;
    assert.ok(out.includes('done'), `child failed: ${err}`);
    return out;
  }

  it('loses a write that was never fsynced, which a plain SIGKILL would keep', async () => {
    await crashAfter(`
      import { writeFileSync, renameSync } from 'node:fs';
      writeFileSync(process.env.ROOT + '/tmp', 'new');
      renameSync(process.env.ROOT + '/tmp', process.env.ROOT + '/old.json');
      console.log('done'); setInterval(() => {}, 1000);`);
    assert.equal(await readFile(join(root, 'old.json'), 'utf8'), 'new', 'the page cache kept it');
    const changed = await applyDurableImage(root, image);
    assert.equal(await readFile(join(root, 'old.json'), 'utf8'), 'old', 'power loss took it');
    assert.ok(!existsSync(join(root, 'tmp')));
    assert.deepEqual(changed.sort(), ['old.json']);
  });

  it('keeps fsynced content but loses a rename whose directory was not fsynced', async () => {
    await crashAfter(`
      import { openSync, writeSync, fsyncSync, closeSync, renameSync } from 'node:fs';
      const fd = openSync(process.env.ROOT + '/tmp', 'w');
      writeSync(fd, 'new'); fsyncSync(fd); closeSync(fd);
      renameSync(process.env.ROOT + '/tmp', process.env.ROOT + '/old.json');
      console.log('done'); setInterval(() => {}, 1000);`);
    await applyDurableImage(root, image);
    assert.equal(await readFile(join(root, 'old.json'), 'utf8'), 'old');
  });

  it('keeps what the product writeFileDurable wrote', async () => {
    await crashAfter(`
      import { writeFileDurable } from ${JSON.stringify(DURABLE_TS)};
      await writeFileDurable(process.env.ROOT + '/old.json', 'durable');
      await writeFileDurable(process.env.ROOT + '/new.json', 'also');
      console.log('done'); setInterval(() => {}, 1000);`);
    const changed = await applyDurableImage(root, image);
    assert.equal(await readFile(join(root, 'old.json'), 'utf8'), 'durable');
    assert.equal(await readFile(join(root, 'new.json'), 'utf8'), 'also');
    assert.deepEqual(changed, []);
  });

  it('fails writes under the root with ENOSPC while the disk-full flag exists', async () => {
    const out = await crashAfter(`
      import { writeFileSync, unlinkSync } from 'node:fs';
      import { writeFileDurable } from ${JSON.stringify(DURABLE_TS)};
      writeFileSync(process.env.FLAG, '');
      const codes = [];
      try { await writeFileDurable(process.env.ROOT + '/x.json', 'x'); codes.push('written'); } catch (e) { codes.push(e.code); }
      writeFileSync(process.env.ROOT + '.elsewhere', 'outside the root is not full');
      unlinkSync(process.env.FLAG);
      await writeFileDurable(process.env.ROOT + '/x.json', 'x');
      codes.push('written');
      console.log(codes.join(',') + ' done'); setInterval(() => {}, 1000);`);
    assert.match(out, /^ENOSPC,written done/);
    await applyDurableImage(root, image);
    assert.equal(await readFile(join(root, 'x.json'), 'utf8'), 'x');
  });
});
