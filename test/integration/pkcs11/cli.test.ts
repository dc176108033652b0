/** `cometkms softhsm init` and `cometkms keys …` as an operator runs them (child processes). */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { configTemplate } from '../../../src/config/template.ts';
import { SOFTHSM_MODULE } from '../../../src/pkcs11/softhsm.ts';
import { freshCli } from '../../helpers/dist.ts';

const BIN = freshCli();
const vectors = JSON.parse(
  await readFile(new URL('../../vectors/upstream/crypto-keys.json', import.meta.url), 'utf8'),
);
const secret = vectors.ed25519_it_s_a_secret;

let dir: string;
let confPath: string;
let pinFile: string;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI with the private SoftHSM config and no PIN in the environment. */
function cli(args: string[], env: Record<string, string> = {}): Promise<Result> {
  const base: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: dir };
  if (confPath) base.SOFTHSM2_CONF = confPath;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { ...base, ...env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

const token = () => ['--module', SOFTHSM_MODULE, '--token-label', 'cli-test'];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-cli-keys-'));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('cometkms softhsm init', () => {
  it('creates a token with its own config and random 0600 PIN files', async () => {
    const r = await cli(['softhsm', 'init', '--dir', join(dir, 'hsm'), '--label', 'cli-test']);
    assert.equal(r.code, 0, r.stderr);
    confPath = join(dir, 'hsm', 'softhsm2.conf');
    pinFile = join(dir, 'hsm', 'user.pin');
    assert.match(r.stdout, new RegExp(`export SOFTHSM2_CONF=${confPath}`));
    assert.match(
      await readFile(confPath, 'utf8'),
      new RegExp(`directories.tokendir = ${join(dir, 'hsm', 'tokens')}`),
    );
    for (const f of [pinFile, join(dir, 'hsm', 'so.pin')]) {
      assert.equal((await stat(f)).mode & 0o777, 0o600);
      assert.match(await readFile(f, 'utf8'), /^[0-9a-f]{24}\n$/);
    }
  });

  it('refuses a second token with the same label', async () => {
    const r = await cli([
      'softhsm',
      'init',
      '--dir',
      join(dir, 'hsm'),
      '--label',
      'cli-test',
      '--pin-file',
      pinFile,
      '--so-pin-file',
      pinFile,
    ]);
    assert.equal(r.code, 4, 'an HSM error');
    assert.match(r.stderr, /already exists/);
  });
});

describe('cometkms keys', () => {
  it('generates both key types', async () => {
    for (const type of ['ed25519', 'secp256k1']) {
      const r = await cli([
        'keys',
        'generate',
        ...token(),
        '--pin-file',
        pinFile,
        '--label',
        `gen-${type}`,
        '--type',
        type,
        '--json',
      ]);
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.equal(out.type, type);
      assert.match(out.address, /^[0-9A-F]{40}$/);
    }
  });

  it('imports priv_validator_key.json, warns to destroy the file, and shows the vector addresses', async () => {
    const file = join(dir, 'priv_validator_key.json');
    await writeFile(file, JSON.stringify(secret.priv_validator_key_json), { mode: 0o600 });
    const r = await cli(['keys', 'import', ...token(), '--label', 'imported', '--from', file], {
      COMETKMS_HSM_PIN: (await readFile(pinFile, 'utf8')).trim(),
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /WARNING: .*Destroy .*priv_validator_key\.json securely/);
    const show = await cli(['keys', 'show', ...token(), '--label', 'imported', '--json']);
    assert.equal(show.code, 0, show.stderr);
    const d = JSON.parse(show.stdout);
    assert.deepEqual(d.pub_key, secret.priv_validator_key_json.pub_key);
    assert.equal(d.pub_key_hex, secret.pubkey);
    assert.equal(d.address, secret.priv_validator_key_json.address);
    assert.equal(d.valcons, secret.cosmosvalcons);
    assert.match(d.valconspub, /^cosmosvalconspub1/);
    // What `tx staking create-validator --pubkey` takes.
    assert.deepEqual(d.cosmos_pub_key, {
      '@type': '/cosmos.crypto.ed25519.PubKey',
      key: secret.priv_validator_key_json.pub_key.value,
    });
    const osmo = await cli([
      'keys',
      'show',
      ...token(),
      '--label',
      'imported',
      '--bech32-prefix',
      'osmovalcons',
    ]);
    assert.match(osmo.stdout, /valcons: +osmovalcons1/);
    assert.match(osmo.stdout, /valconspub: +osmovalconspub1/);
    assert.match(
      osmo.stdout,
      new RegExp(
        `^cosmos_pub_key: +\\{"@type":"/cosmos\\.crypto\\.ed25519\\.PubKey","key":"${secret.priv_validator_key_json.pub_key.value.replace(/[+/]/g, '\\$&')}"\\}$`,
        'm',
      ),
    );
  });

  it('shows a secp256k1 key as the Cosmos SDK secp256k1 PubKey (33-byte compressed point)', async () => {
    const r = await cli(['keys', 'show', ...token(), '--label', 'gen-secp256k1', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const d = JSON.parse(r.stdout);
    assert.equal(d.cosmos_pub_key['@type'], '/cosmos.crypto.secp256k1.PubKey');
    const key = Buffer.from(d.cosmos_pub_key.key, 'base64');
    assert.equal(key.length, 33);
    assert.ok(key[0] === 2 || key[0] === 3);
    assert.equal(key.toString('hex'), d.pub_key_hex);
  });

  it('refuses to import a key the token already holds under another label', async () => {
    const file = join(dir, 'priv_validator_key.json');
    const r = await cli([
      'keys',
      'import',
      ...token(),
      '--pin-file',
      pinFile,
      '--label',
      'twin',
      '--from',
      file,
    ]);
    assert.equal(r.code, 4, 'an HSM error');
    assert.match(r.stderr, /already holds this ed25519 key, labelled "imported"/);
    const list = await cli(['keys', 'list', ...token()]);
    assert.doesNotMatch(list.stdout, /^twin /m);
  });

  it('lists the keys without a PIN', async () => {
    const r = await cli(['keys', 'list', ...token()]);
    assert.equal(r.code, 0, r.stderr);
    const labels = r.stdout
      .trim()
      .split('\n')
      .slice(1)
      .map((line) => line.split(/\s+/).slice(0, 2));
    assert.deepEqual(labels, [
      ['gen-ed25519', 'ed25519'],
      ['gen-secp256k1', 'secp256k1'],
      ['imported', 'ed25519'],
    ]);
  });

  it('reads the [hsm] section of a config file', async () => {
    const config = join(dir, 'config.toml');
    const text = configTemplate({ nodeId: 'n1', home: dir })
      .replace('token_label = "cometkms"', 'token_label = "cli-test"')
      .replace(`# pin_file = "/etc/cometkms/hsm.pin"`, `pin_file = ${JSON.stringify(pinFile)}`);
    await writeFile(config, text);
    const r = await cli([
      'keys',
      'generate',
      '--config',
      config,
      '--label',
      'from-config',
      '--type',
      'ed25519',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const list = await cli(['keys', 'list', '--config', config, '--json']);
    assert.ok(JSON.parse(list.stdout).some((k: { label: string }) => k.label === 'from-config'));
    const both = await cli(['keys', 'list', '--config', config, ...token()]);
    assert.equal(both.code, 2, 'a usage error');
    assert.match(both.stderr, /either --config or/);
  });

  describe('bad input', () => {
    /** Runs a command that must fail with exit code `code` (2 usage, 4 HSM, 1 other). */
    const fails = async (code: number, args: string[], pattern: RegExp, env?: Record<string, string>) => {
      const r = await cli(args, env);
      assert.equal(r.code, code, `expected exit ${code}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, pattern);
    };

    it('a duplicate label', () =>
      fails(
        4,
        ['keys', 'generate', ...token(), '--pin-file', pinFile, '--label', 'imported', '--type', 'ed25519'],
        /already exists/,
      ));

    it('a missing module', () =>
      fails(
        4,
        ['keys', 'list', '--module', join(dir, 'nope.so'), '--token-label', 'cli-test'],
        /module not found/,
      ));

    it('a missing token', () =>
      fails(
        4,
        ['keys', 'list', '--module', SOFTHSM_MODULE, '--token-label', 'nope'],
        /token "nope" not found/,
      ));

    it('a wrong PIN', async () => {
      const wrong = join(dir, 'wrong.pin');
      await writeFile(wrong, 'not-the-pin\n', { mode: 0o600 });
      await fails(
        4,
        ['keys', 'generate', ...token(), '--pin-file', wrong, '--label', 'x', '--type', 'ed25519'],
        /CKR_PIN_INCORRECT/,
      );
    });

    it('no PIN at all, and no way to give one on the command line', async () => {
      await fails(4, ['keys', 'generate', ...token(), '--label', 'x', '--type', 'ed25519'], /no HSM PIN/);
      await fails(
        2,
        ['keys', 'generate', ...token(), '--pin', '1234', '--label', 'x', '--type', 'ed25519'],
        /unknown option '--pin'/,
      );
    });

    it('a wrong key type', () =>
      fails(
        2,
        ['keys', 'generate', ...token(), '--pin-file', pinFile, '--label', 'x', '--type', 'rsa'],
        /Allowed choices are ed25519, secp256k1/,
      ));

    it('a key that does not exist', () =>
      fails(
        4,
        ['keys', 'show', ...token(), '--label', 'absent'],
        /no ed25519 or secp256k1 key labelled "absent"/,
      ));

    it('a bare 32-byte seed and a key file whose public key does not match', async () => {
      const short = join(dir, 'short.json');
      const seed = Buffer.from(secret.seed_sha256_of_secret, 'hex').toString('base64');
      await writeFile(
        short,
        JSON.stringify({ priv_key: { type: 'tendermint/PrivKeyEd25519', value: seed } }),
      );
      await fails(
        1,
        ['keys', 'import', ...token(), '--pin-file', pinFile, '--label', 'x', '--from', short],
        /must be 64 bytes/,
      );
      const mismatched = join(dir, 'mismatched.json');
      const other = {
        ...secret.priv_validator_key_json,
        pub_key: { type: 'tendermint/PubKeyEd25519', value: Buffer.alloc(32, 9).toString('base64') },
      };
      await writeFile(mismatched, JSON.stringify(other));
      await fails(
        1,
        ['keys', 'import', ...token(), '--pin-file', pinFile, '--label', 'x', '--from', mismatched],
        /does not match/,
      );
      const list = await cli(['keys', 'list', ...token()]);
      assert.doesNotMatch(list.stdout, /^x /m);
    });
  });
});

describe('cometkms keys delete', () => {
  /** Runs `keys delete` on a pseudo-terminal (util-linux `script`), typing `answer` at the prompt. */
  function onTerminal(label: string, answer: string): Promise<Result> {
    const command = [
      process.execPath,
      BIN,
      'keys',
      'delete',
      ...token(),
      '--pin-file',
      pinFile,
      '--label',
      label,
    ]
      .map((a) => `'${a.replace(/'/g, `'\\''`)}'`)
      .join(' ');
    return new Promise((resolve) => {
      const child = execFile(
        'script',
        ['-qec', command, '/dev/null'],
        { env: { PATH: process.env.PATH ?? '', HOME: dir, SOFTHSM2_CONF: confPath }, timeout: 60_000 },
        (err, stdout, stderr) => {
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
        },
      );
      child.stdin?.end(`${answer}\n`);
    });
  }

  const labels = async () =>
    (JSON.parse((await cli(['keys', 'list', ...token(), '--json'])).stdout) as Array<{ label: string }>).map(
      (k) => k.label,
    );

  it('without a terminal and without --yes: a usage error, nothing deleted', async () => {
    const r = await cli(['keys', 'delete', ...token(), '--pin-file', pinFile, '--label', 'from-config']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /asks for confirmation on a terminal; .*pass --yes/);
    assert.ok((await labels()).includes('from-config'));
  });

  it('on a terminal: shows the key and deletes only when its label is typed again', async () => {
    const wrong = await onTerminal('from-config', 'something-else');
    assert.equal(wrong.code, 1, wrong.stdout);
    assert.match(wrong.stdout, /key "from-config" on token "cli-test": ed25519, address [0-9A-F]{40}/);
    assert.match(wrong.stdout, /cannot be undone/);
    assert.match(wrong.stdout, /not deleted: the label typed did not match/);
    assert.ok((await labels()).includes('from-config'));

    const right = await onTerminal('from-config', 'from-config');
    assert.equal(right.code, 0, right.stdout);
    assert.match(right.stdout, /deleted key "from-config" \(ed25519, address [0-9A-F]{40}\)/);
    assert.ok(!(await labels()).includes('from-config'));
  });

  it('--yes deletes both halves of the pair; the label can then be used again', async () => {
    const r = await cli([
      'keys',
      'delete',
      ...token(),
      '--pin-file',
      pinFile,
      '--label',
      'gen-secp256k1',
      '--yes',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /deleted key "gen-secp256k1" \(secp256k1, address [0-9A-F]{40}\)/);
    assert.ok(!(await labels()).includes('gen-secp256k1'));
    const again = await cli([
      'keys',
      'generate',
      ...token(),
      '--pin-file',
      pinFile,
      '--label',
      'gen-secp256k1',
      '--type',
      'secp256k1',
    ]);
    assert.equal(again.code, 0, again.stderr);
  });

  it('a label that names no key: an HSM error', async () => {
    const r = await cli(['keys', 'delete', ...token(), '--pin-file', pinFile, '--label', 'absent', '--yes']);
    assert.equal(r.code, 4);
    assert.match(r.stderr, /no key labelled "absent" on token "cli-test"/);
  });
});
