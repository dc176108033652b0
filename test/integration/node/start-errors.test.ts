/**
 * `cometkms start` refusing to run: each bad input ends the real process with exit code 1 and a
 * message that says what to fix, and no validator is ever dialed.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SignedMsgType } from '../../../src/cometbft/types.ts';
import { chainFiles, FileSignStateStore } from '../../../src/store/file.ts';
import type { SignState } from '../../../src/store/types.ts';
import { generateKeys, type KmsChain, KmsHome, killAllKms } from '../../helpers/kms-process.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.ts';

const CHAIN = 'err-chain-1';

describe('cometkms start: refusals', () => {
  let token: SoftHsmToken;
  let dir: string;
  /** a unix "validator" that only counts connection attempts */
  let listener: Server;
  let validatorAddr: string;
  let dials = 0;
  const homes: KmsHome[] = [];

  const chain = (over: Partial<KmsChain> = {}): KmsChain => ({
    id: CHAIN,
    keyLabel: 'val-ed',
    keyType: 'ed25519',
    protocol: 'v0.38',
    validators: [validatorAddr],
    ...over,
  });

  async function home(opts: Partial<Parameters<typeof KmsHome.create>[0]> = {}): Promise<KmsHome> {
    const h = await KmsHome.create({ token, chains: [chain()], ...opts });
    homes.push(h);
    return h;
  }

  /** Starts a node that must fail; returns its stderr after checking exit code 1 and no dial. */
  async function refused(h: KmsHome, args: string[] = [], env: Record<string, string> = {}): Promise<string> {
    const before = dials;
    const p = h.start({ args, env });
    assert.deepEqual(await p.waitExit(30_000), { code: 1, signal: null }, p.stderr);
    assert.equal(dials, before, 'no validator was dialed');
    return p.stderr;
  }

  before(async () => {
    token = await createSoftHsmToken();
    dir = await mkdtemp(join(tmpdir(), 'ckms-err-'));
    const path = join(dir, 'validator.sock');
    listener = createServer((socket) => {
      dials++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => listener.listen(path, resolve));
    validatorAddr = `unix://${path}`;
    await generateKeys(token, [
      { label: 'val-ed', type: 'ed25519' },
      { label: 'val-k1', type: 'secp256k1' },
    ]);
  });

  after(async () => {
    await killAllKms();
    await new Promise<void>((resolve) => listener.close(() => resolve()));
    for (const h of homes) await h.cleanup();
    await rm(dir, { recursive: true, force: true });
    await token.cleanup();
  });

  it('an un-initialised home: says to run init', async () => {
    const h = await home({ initialise: false });
    const stderr = await refused(h);
    assert.match(stderr, /is not initialised: run `cometkms init --home .*` first/);
  });

  it('an unknown config key: names it', async () => {
    const h = await home({ extraToml: 'colour = "blue"\n' });
    const stderr = await refused(h);
    assert.match(stderr, /chain\[0\]\.validator\[0\]\.colour: unknown key/);
  });

  it('a missing key label: names the chain and the label', async () => {
    const h = await home({ chains: [chain({ keyLabel: 'no-such-key' })] });
    const stderr = await refused(h);
    assert.match(stderr, new RegExp(`chain "${CHAIN}": key_label "no-such-key" \\(key_type ed25519\\)`));
    assert.match(stderr, /no public key labelled "no-such-key"/);
  });

  it('a key of the wrong type: names the chain, the label and both types', async () => {
    const h = await home({ chains: [chain({ keyLabel: 'val-k1', keyType: 'ed25519' })] });
    const stderr = await refused(h);
    assert.match(stderr, new RegExp(`chain "${CHAIN}": key_label "val-k1"`));
    assert.match(stderr, /is secp256k1, not ed25519/);
  });

  it('a wrong PIN: the login error names the PIN source', async () => {
    const h = await home({ pin: 'not-the-pin' });
    const stderr = await refused(h);
    assert.match(stderr, /cannot log in to token .* with the PIN from hsm\.pin_file .*CKR_PIN_INCORRECT/);
  });

  it('no PIN at all (no pin_file, no COMETKMS_HSM_PIN): says how to provide one', async () => {
    const h = await home({ pinSource: 'env' });
    const p = h.start({ env: { COMETKMS_HSM_PIN: '' } });
    assert.deepEqual(await p.waitExit(30_000), { code: 1, signal: null });
    assert.match(p.stderr, /no HSM PIN: configure hsm\.pin_file .* or set COMETKMS_HSM_PIN/);
  });

  it('a corrupt state file: stops with the store message', async () => {
    const h = await home();
    await writeFile(chainFiles(h.home, CHAIN).state, '{"not": "a state file"', { mode: 0o600 });
    const stderr = await refused(h);
    assert.match(stderr, /sign state .* \(chain "err-chain-1"\): unreadable/);
    assert.match(stderr, /cometkms state import/);
  });

  it('a state file older than its high-water record (restored backup): stops', async () => {
    const h = await home();
    const files = chainFiles(h.home, CHAIN);
    const store = await FileSignStateStore.open(h.home, { chainIds: [CHAIN] });
    const state = (height: bigint): SignState => ({
      height,
      round: 0,
      step: 2,
      signBytes: new Uint8Array([SignedMsgType.Prevote, Number(height)]),
      extensionSignBytes: new Uint8Array(),
      signature: new Uint8Array(),
    });
    const s1 = state(1n);
    assert.deepEqual(await store.reserve(CHAIN, await store.load(CHAIN), s1), { ok: true });
    await copyFile(files.state, join(dir, 'backup.json'));
    assert.deepEqual(await store.reserve(CHAIN, s1, state(2n)), { ok: true });
    await store.close();
    await copyFile(join(dir, 'backup.json'), files.state);
    const stderr = await refused(h);
    assert.match(stderr, /is older than expected/);
  });

  it('a second process on the same home: refused while the first keeps running', async () => {
    // The running node dials too: give it an endpoint other than the counting listener.
    const h = await home({ chains: [chain({ validators: [`unix://${join(dir, 'nobody.sock')}`] })] });
    const first = h.start();
    await first.waitReady();
    const stderr = await refused(h);
    assert.match(stderr, new RegExp(`is in use by another cometkms process \\(pid ${first.pid}\\)`));
    assert.equal(first.exitStatus, undefined, 'the first node still runs');
    first.kill('SIGTERM');
    assert.deepEqual(await first.waitExit(15_000), { code: 0, signal: null });
  });

  it('a failure after the HSM session is open (admin port taken): cleans up and exits 1', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const { port } = blocker.address() as AddressInfo;
    try {
      const h = await home();
      const stderr = await refused(h, [], { COMETKMS_ADMIN_LISTEN: `127.0.0.1:${port}` });
      assert.match(stderr, /admin API cannot listen on admin.listen 127.0.0.1:\d+: .*EADDRINUSE/);
      // Everything was released on the way out: the home starts normally now.
      const p = h.start();
      await p.waitReady();
      p.kill('SIGTERM');
      assert.deepEqual(await p.waitExit(15_000), { code: 0, signal: null });
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });

  it('a [cluster] section: this command runs single nodes only', async () => {
    const h = await home({
      extraToml:
        '\n[cluster]\netcd_endpoints = ["http://127.0.0.1:2379"]\n' +
        'forward_listen = "127.0.0.1:0"\nforward_advertise = "127.0.0.1:26790"\n',
    });
    const stderr = await refused(h);
    assert.match(stderr, /\[cluster\] is set, but this build of `cometkms start` runs single nodes only/);
  });

  it('the test-only crash hook cannot be armed without NODE_ENV=test and its probability', async () => {
    const h = await home();
    let stderr = await refused(h, ['--test-crash-after-reserve'], { COMETKMS_TEST_CRASH_AFTER_RESERVE: '1' });
    assert.match(stderr, /test-only fault hook: it needs NODE_ENV=test/);
    stderr = await refused(h, ['--test-crash-after-reserve'], { NODE_ENV: 'test' });
    assert.match(stderr, /needs COMETKMS_TEST_CRASH_AFTER_RESERVE set to a probability in \(0, 1\]/);
  });

  it('the crash variable without the hidden flag is ignored (and warned about)', async () => {
    const h = await home();
    const p = h.start({ env: { NODE_ENV: 'test', COMETKMS_TEST_CRASH_AFTER_RESERVE: '1' } });
    await p.waitReady();
    assert.ok(p.logs().some((r) => String(r['msg']).includes('is set but ignored')));
    assert.ok(!p.logs().some((r) => String(r['msg']).includes('fault hook is armed')));
    p.kill('SIGTERM');
    assert.deepEqual(await p.waitExit(15_000), { code: 0, signal: null });
  });
});
