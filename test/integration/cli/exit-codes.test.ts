/**
 * Exit codes by error class, from real `cometkms` processes: 2 usage, 3 configuration, 4 HSM,
 * 1 anything else, 0 success; and `cometkms config check`, which runs start's checks without
 * opening a socket (no admin port bound, no validator dialed, no etcd contacted).
 */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freeLoopbackPort } from '../../../src/cluster/free-port.ts';
import { toHexUpper, validatorAddress } from '../../../src/cometbft/keys.ts';
import { chainFiles } from '../../../src/store/file.ts';
import { makeTestCerts, type TestCerts } from '../../helpers/certs.ts';
import { generateKeys, KmsHome, type KmsHomeOptions, runCli } from '../../helpers/kms-process.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.ts';

const CHAIN = 'exit-chain';

let token: SoftHsmToken;
let dir: string;
let keyAddress: string;
/** a validator endpoint that counts connection attempts */
let listener: Server;
let validator: string;
let dials = 0;
const homes: KmsHome[] = [];

async function home(over: Partial<KmsHomeOptions> = {}): Promise<KmsHome> {
  const h = await KmsHome.create({
    token,
    chains: [
      { id: CHAIN, keyLabel: 'exit-key', keyType: 'ed25519', protocol: 'v0.38', validators: [validator] },
    ],
    ...over,
  });
  homes.push(h);
  return h;
}

/** Runs `cometkms ...args` in `h`'s environment (or a bare one) and checks its exit code. */
async function exits(
  code: number,
  args: string[],
  h?: KmsHome,
  env: Record<string, string> = {},
): Promise<{ stdout: string; stderr: string }> {
  const r = await runCli(args, h === undefined ? { PATH: process.env['PATH'] ?? '', ...env } : h.env(env));
  assert.equal(r.code, code, `cometkms ${args.join(' ')}: ${r.stdout}\n${r.stderr}`);
  return r;
}

before(async () => {
  token = await createSoftHsmToken();
  dir = await mkdtemp(join(tmpdir(), 'ckms-exit-'));
  const keys = await generateKeys(token, [{ label: 'exit-key', type: 'ed25519' }]);
  keyAddress = toHexUpper(validatorAddress(keys.get('exit-key')!));
  listener = createServer((socket) => {
    dials++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => listener.listen(join(dir, 'validator.sock'), resolve));
  validator = `unix://${join(dir, 'validator.sock')}`;
});

after(async () => {
  await new Promise<void>((resolve) => listener.close(() => resolve()));
  for (const h of homes) await h.cleanup();
  await rm(dir, { recursive: true, force: true });
  await token.cleanup();
});

describe('exit 2: usage errors', () => {
  test('an unknown option, a missing required option, a bad choice, a missing subcommand', async () => {
    assert.match(
      (await exits(2, ['start', '--config', 'x.toml', '--bogus'])).stderr,
      /unknown option '--bogus'/,
    );
    assert.match((await exits(2, ['start'])).stderr, /required option '--config <file>' not specified/);
    assert.match(
      (await exits(2, ['start', '--config', 'x', '--log-level', 'loud'])).stderr,
      /Allowed choices/,
    );
    assert.match((await exits(2, ['keys'])).stderr, /Usage: cometkms keys/);
    assert.match((await exits(2, ['nonsense'])).stderr, /unknown command 'nonsense'/);
  });

  test('options that do not go together', async () => {
    const r = await exits(2, ['init', '--home', join(dir, 'never'), '--chain-id', 'c']);
    assert.match(r.stderr, /--chain-id, --key-label and --validator go together/);
    const c = await exits(2, ['init', '--home', join(dir, 'never'), '--cluster']);
    assert.match(c.stderr, /--cluster needs --etcd-endpoints and --forward-advertise/);
  });

  test('help and version exit 0; every --help ends with the exit codes', async () => {
    for (const args of [
      ['--help'],
      ['start', '--help'],
      ['config', 'check', '--help'],
      ['keys', 'delete', '--help'],
    ]) {
      const r = await exits(0, args);
      assert.match(
        r.stdout,
        /Exit codes:\n {2}0 {2}success\n {2}1 {2}other failure.*\n {2}2 {2}usage error.*\n {2}3 {2}configuration error.*\n {2}4 {2}HSM error/,
      );
    }
    const pkg = JSON.parse(await readFile(new URL('../../../package.json', import.meta.url), 'utf8'));
    assert.equal((await exits(0, ['--version'])).stdout.trim(), pkg.version);
  });
});

describe('config check', () => {
  test('a good config: exit 0, every chain key and its state, and no socket opened', async () => {
    // admin.listen on a port that is taken: start would fail to bind it; the check never tries.
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    try {
      const h = await home();
      const port = (blocker.address() as AddressInfo).port;
      const before = dials;
      const r = await exits(0, ['config', 'check', '--config', h.configPath], h, {
        COMETKMS_ADMIN_LISTEN: `127.0.0.1:${port}`,
      });
      assert.match(r.stdout, new RegExp(`^config ok: ${h.configPath}$`, 'm'));
      assert.match(r.stdout, /login with the PIN works/);
      assert.match(
        r.stdout,
        new RegExp(`chain ${CHAIN}: key "exit-key" ed25519 address ${keyAddress}, last HRS 0/0/0`),
      );
      assert.equal(dials, before, 'no validator was dialed');
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });

  test('a cluster config is checked without contacting etcd', async () => {
    const certs: TestCerts = await makeTestCerts('cometkms exit codes', ['kms-c']);
    try {
      const f = certs.files('kms-c');
      const str = JSON.stringify;
      const closed = await freeLoopbackPort();
      const h = await home({
        nodeId: 'kms-c',
        extraToml:
          `\n[cluster]\netcd_endpoints = ["https://127.0.0.1:${closed}"]\n` +
          'forward_listen = "127.0.0.1:0"\nforward_advertise = "127.0.0.1:26790"\n' +
          `tls_ca_file = ${str(f.caFile)}\ntls_cert_file = ${str(f.certFile)}\ntls_key_file = ${str(f.keyFile)}\n`,
      });
      const r = await exits(0, ['config', 'check', '--config', h.configPath], h);
      assert.match(r.stdout, /node kms-c, cluster/);
      assert.match(r.stdout, /last HRS in etcd \(not read\)/);
      await chmod(f.keyFile, 0o640);
      const bad = await exits(3, ['config', 'check', '--config', h.configPath], h);
      assert.match(bad.stderr, /tls_key_file.* is accessible by group or others \(mode 0640\)/);
    } finally {
      await certs.cleanup();
    }
  });

  test('exit 3: an unknown key, a secret file others can read, a home init never prepared', async () => {
    const unknown = await home({ extraToml: 'colour = "blue"\n' });
    assert.match(
      (await exits(3, ['config', 'check', '--config', unknown.configPath], unknown)).stderr,
      /colour: unknown key/,
    );
    const open = await home();
    await chmod(join(open.dir, 'hsm.pin'), 0o644);
    assert.match(
      (await exits(3, ['config', 'check', '--config', open.configPath], open)).stderr,
      /HSM PIN file .* is accessible by group or others \(mode 0644\): run `chmod 600/,
    );
    const bare = await home({ initialise: false });
    assert.match(
      (await exits(3, ['config', 'check', '--config', bare.configPath], bare)).stderr,
      /is not initialised: run `cometkms init --home/,
    );
    assert.match(
      (await exits(3, ['config', 'check', '--config', join(dir, 'absent.toml')])).stderr,
      /absent\.toml/,
    );
  });

  test('exit 4: a wrong PIN, a missing token, a missing key, a missing module', async () => {
    const wrongPin = await home({ pin: 'not-the-pin' });
    assert.match(
      (await exits(4, ['config', 'check', '--config', wrongPin.configPath], wrongPin)).stderr,
      /cannot log in to token .*CKR_PIN_INCORRECT/,
    );
    const noKey = await home({
      chains: [
        { id: CHAIN, keyLabel: 'absent', keyType: 'ed25519', protocol: 'v0.38', validators: [validator] },
      ],
    });
    assert.match(
      (await exits(4, ['config', 'check', '--config', noKey.configPath], noKey)).stderr,
      /key_label "absent" .*no public key labelled "absent"/,
    );
    const noToken = await home();
    const text = await readFile(noToken.configPath, 'utf8');
    await writeFile(
      noToken.configPath,
      text.replace(`token_label = "${token.label}"`, 'token_label = "nope"'),
    );
    assert.match(
      (await exits(4, ['config', 'check', '--config', noToken.configPath], noToken)).stderr,
      /token "nope" not found/,
    );
    await writeFile(noToken.configPath, text.replace(token.modulePath, join(dir, 'nope.so')));
    assert.match(
      (await exits(4, ['config', 'check', '--config', noToken.configPath], noToken)).stderr,
      /PKCS#11 module not found/,
    );
  });

  test('exit 1: a sign state that cannot be read', async () => {
    const h = await home();
    await writeFile(chainFiles(h.home, CHAIN).log, '{"not": "a state log"', { mode: 0o600 });
    assert.match(
      (await exits(1, ['config', 'check', '--config', h.configPath], h)).stderr,
      /sign state .* \(chain "exit-chain"\): unreadable/,
    );
  });
});

describe('exit 1: other failures', () => {
  test('an admin API that does not answer, a key file that cannot be read', async () => {
    const h = await home();
    const port = await freeLoopbackPort();
    const tokenFile = join(h.dir, 'admin.token');
    await exits(1, ['status', '--admin', `http://127.0.0.1:${port}`, '--token-file', tokenFile]);
    const r = await exits(
      1,
      ['keys', 'import', '--config', h.configPath, '--label', 'x', '--from', join(dir, 'no-such-key.json')],
      h,
    );
    assert.match(r.stderr, /cannot read .*no-such-key\.json: ENOENT/);
  });
});
