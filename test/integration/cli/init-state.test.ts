/**
 * `cometkms init` and `cometkms state show|import|export` run as real processes against a real
 * home directory, including the home lock held by another process.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

const REPO = join(import.meta.dirname, '../../..');
const BIN = join(REPO, 'bin/cometkms.js');
const CHAIN = 'test-chain/1';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cometkms(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: REPO, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function ok(r: Run): Run {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

function pvState(
  height: number,
  round: number,
  step: number,
  signbytes?: string,
  signature?: string,
): string {
  return JSON.stringify({ height: String(height), round, step, signbytes, signature });
}

let dir: string;
let home: string;
let config: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-cli-'));
  home = join(dir, 'home');
  config = join(home, 'config.toml');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function showJson(): Promise<{
  height: string;
  round: number;
  step: number;
  sign_bytes: string;
  signature: string;
}> {
  return JSON.parse(
    ok(await cometkms('state', 'show', '--config', config, '--chain-id', CHAIN, '--json')).stdout,
  );
}

async function importFile(name: string, content: string, ...extra: string[]): Promise<Run> {
  const path = join(dir, name);
  await writeFile(path, content);
  return cometkms('state', 'import', '--config', config, '--chain-id', CHAIN, '--from', path, ...extra);
}

describe('cometkms init / state', { concurrency: false }, () => {
  test('state commands on a home init never prepared say to run init', async () => {
    const other = join(dir, 'other.toml');
    await writeFile(
      other,
      `[node]\nid = "k"\nhome = "nohome"\n[hsm]\nmodule = "/x.so"\ntoken_label = "t"\n` +
        `[[chain]]\nid = "c"\nkey_label = "k"\nkey_type = "ed25519"\nprotocol = "v0.38"\n[[chain.validator]]\naddr = "tcp://127.0.0.1:1"\n`,
    );
    const r = await cometkms('state', 'show', '--config', other, '--chain-id', 'c');
    assert.equal(r.code, 3, 'a configuration error');
    assert.match(r.stderr, /home .*nohome is not initialised: run `cometkms init --home .*nohome` first/);
  });

  test('init creates the home, config, state dir and identity, and refuses to run twice', async () => {
    const r = ok(
      await cometkms(
        'init',
        '--home',
        home,
        '--node-id',
        'kms-7',
        '--chain-id',
        CHAIN,
        '--key-label',
        'val',
        '--validator',
        'tcp://127.0.0.1:26659',
        '--protocol',
        'v0.37',
      ),
    );
    assert.match(r.stdout, /privval transport identity: node id [0-9a-f]{40}/);
    assert.match(r.stdout, /next steps/);
    assert.equal((await stat(home)).mode & 0o777, 0o700);
    assert.equal((await stat(join(home, 'state'))).mode & 0o777, 0o700);
    assert.equal((await stat(config)).mode & 0o777, 0o600);
    const text = await readFile(config, 'utf8');
    assert.match(text, /id = "kms-7"/);
    assert.match(text, /protocol = "v0.37"/);
    await stat(join(home, 'node_key.json'));

    const again = await cometkms('init', '--home', home);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /config\.toml already exists: init never overwrites/);
    assert.equal(await readFile(config, 'utf8'), text);
  });

  test('init rejects bad options without creating anything', async () => {
    const target = join(dir, 'bad-home');
    const r = await cometkms(
      'init',
      '--home',
      target,
      '--chain-id',
      'c',
      '--key-label',
      'k',
      '--validator',
      'foo',
    );
    assert.equal(r.code, 2, 'a usage error');
    assert.match(r.stderr, /chain\[0\]\.validator\[0\]\.addr: expected tcp:\/\/host:port/);
    await assert.rejects(stat(target), { code: 'ENOENT' });
  });

  test('init creates no chain state; state init creates it once, at the given height', async () => {
    // init wrote a config for CHAIN, but a chain has a state only once an operator created it
    const missing = await cometkms('state', 'show', '--config', config, '--chain', CHAIN);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /chain "test-chain\/1" has no sign state/);
    assert.match(missing.stderr, /cometkms state init --config \S+ --chain "test-chain\/1"/);
    assert.match(missing.stderr, /cometkms state import/);

    // usage errors exit 2 and create nothing
    for (const args of [
      ['--config', config],
      ['--config', config, '--chain', CHAIN, '--height', '-1'],
      ['--config', config, '--chain', CHAIN, '--height', String(2n ** 62n + 1n)],
      ['--config', config, '--chain', CHAIN, '--chain-id', 'other'],
    ]) {
      const bad = await cometkms('state', 'init', ...args);
      assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.stderr}`);
    }
    assert.equal((await cometkms('state', 'show', '--config', config, '--chain', CHAIN)).code, 1);

    const created = ok(
      await cometkms('state', 'init', '--config', config, '--chain', CHAIN, '--height', '3'),
    );
    assert.match(created.stdout, /sign state created at height\/round\/step 3\/0\/0/);
    assert.deepEqual(await showJson(), {
      chain_id: CHAIN,
      height: '3',
      round: 0,
      step: 0,
      sign_bytes: '',
      extension_sign_bytes: '',
      signature: '',
    });
    const again = await cometkms('state', 'init', '--config', config, '--chain-id', CHAIN);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already has sign state/);
  });

  test('import moves the state forward; show and export read it back', async () => {
    ok(await importFile('s10.json', pvState(10, 1, 2, 'AABBCC', 'AQID')));
    const s = await showJson();
    assert.deepEqual(
      [s.height, s.round, s.step, s.sign_bytes, s.signature],
      ['10', 1, 2, 'aabbcc', '010203'],
    );
    const human = ok(await cometkms('state', 'show', '--config', config, '--chain-id', CHAIN)).stdout;
    assert.match(human, /height: +10\n/);
    assert.match(human, /step: +2 \(prevote\)/);

    const exported = ok(await cometkms('state', 'export', '--config', config, '--chain-id', CHAIN)).stdout;
    assert.equal(
      exported,
      '{\n  "height": "10",\n  "round": 1,\n  "step": 2,\n  "signature": "AQID",\n  "signbytes": "AABBCC"\n}\n',
    );
    const out = join(dir, 'exported.json');
    ok(await cometkms('state', 'export', '--config', config, '--chain-id', CHAIN, '--out', out));
    assert.equal(await readFile(out, 'utf8'), exported.trimEnd());
    const twice = await cometkms('state', 'export', '--config', config, '--chain-id', CHAIN, '--out', out);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /already exists/);
  });

  test('import refuses to go backwards or sideways, and leaves the state alone', async () => {
    const back = await importFile('s9.json', pvState(9, 5, 3, 'DD'));
    assert.equal(back.code, 1);
    assert.match(back.stderr, /refusing to import .* backwards \(stored 10\/1\/2, file 9\/5\/3\).*--force/);
    const sideways = await importFile('s10b.json', pvState(10, 1, 2, 'DDEEFF'));
    assert.equal(sideways.code, 1);
    assert.match(sideways.stderr, /same height\/round\/step with different sign bytes/);
    const same = ok(await importFile('s10c.json', pvState(10, 1, 2, 'aabbcc')));
    assert.match(same.stdout, /nothing to move/);
    const s = await showJson();
    assert.deepEqual([s.height, s.sign_bytes, s.signature], ['10', 'aabbcc', '010203']);
  });

  test('import --force moves backwards with a loud double-sign warning', async () => {
    const r = ok(await importFile('s5.json', pvState(5, 0, 1), '--force'));
    assert.match(r.stderr, /DOUBLE SIGN/);
    assert.match(r.stdout, /FORCED to height\/round\/step 5\/0\/1 \(was 10\/1\/2\)/);
    const s = await showJson();
    assert.deepEqual([s.height, s.round, s.step, s.sign_bytes], ['5', 0, 1, '']);
  });

  test('import --force also replaces a damaged state that show refuses', async () => {
    const stateDir = join(home, 'state');
    const file = (await readdir(stateDir)).find((f) => f.endsWith('.log'))!;
    await writeFile(join(stateDir, file), 'torn');
    const show = await cometkms('state', 'show', '--config', config, '--chain-id', CHAIN);
    assert.equal(show.code, 1);
    assert.match(show.stderr, /unreadable: shorter than its header.*cometkms state import/);
    const plain = await importFile('s20.json', pvState(20, 0, 3, 'AA'));
    assert.equal(plain.code, 1);
    assert.match(plain.stderr, /unreadable: shorter than its header/);
    const r = ok(await importFile('s20.json', pvState(20, 0, 3, 'AA'), '--force'));
    assert.match(r.stdout, /was unusable/);
    assert.equal((await showJson()).height, '20');
  });

  test('import fails while another process holds the home; show still works', async () => {
    const script =
      "const { FileSignStateStore } = await import('./src/store/file.ts');" +
      'await FileSignStateStore.open(process.argv[1]); process.stdout.write("ready\\n"); setInterval(() => {}, 1000);';
    const holder = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, home], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      await Promise.race([
        once(holder.stdout, 'data'),
        once(holder, 'exit').then(() => {
          throw new Error('holder exited early');
        }),
      ]);
      const r = await importFile('s30.json', pvState(30, 0, 1));
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        new RegExp(`home .* is in use by another cometkms process \\(pid ${holder.pid}\\)`),
      );
      assert.equal((await showJson()).height, '20');
    } finally {
      const exited = once(holder, 'exit');
      holder.kill('SIGKILL');
      await exited;
    }
    ok(await importFile('s30.json', pvState(30, 0, 1)));
    assert.equal((await showJson()).height, '30');
  });
});
