/**
 * Crash safety of the real process (ARCHITECTURE.md §2, invariants 1–3): two sentries of one
 * validator (one tcp, one unix, sharing one double-sign record) drive `cometkms start` while the
 * test SIGKILLs it at seeded random moments and restarts it. Every third run also arms the
 * test-only hook that SIGKILLs the node right after a reservation is durable and before the HSM
 * signs, the window reserve-before-sign exists for.
 *
 * Afterwards: no double sign and no invalid signature in the sentries' records, the state on disk
 * never went backwards (nor changed its bytes at one HRS) across any crash, every hook crash
 * left a reservation without a signature, and signing made progress to the end.
 *
 * CHAOS_SEED=<n> replays a run's kill schedule.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { bytesEqual } from '../../src/cometbft/bytes.ts';
import { compareHRS } from '../../src/cometbft/types.ts';
import { Rng } from '../../src/simulator/rng.ts';
import { SignRecord } from '../../src/simulator/sign-record.ts';
import { ValidatorSimulator } from '../../src/simulator/simulator.ts';
import { readChainState } from '../../src/store/file.ts';
import { formatHrs } from '../../src/store/state-codec.ts';
import type { SignState } from '../../src/store/types.ts';
import { generateKeys, KmsHome, type KmsProcess, killAllKms } from '../helpers/kms-process.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const CHAIN = 'chaos-chain-1';
const SEED = Number(process.env['CHAOS_SEED'] ?? 20_261_126);
/**
 * Kill until this many kills, at least one of them by the hook. The phase is driven by the count,
 * not by a time budget: a cycle's start-up is slow on a loaded machine, and a fixed budget there
 * ends with too few kills. The deadline only bounds the phase (a node that never gets ready).
 */
const TARGET_KILLS = 26;
const MIN_KILLS = 20;
const KILL_PHASE_MS = 170_000;
/** A run lives this long at most before the test kills it (uniform from the minimum). */
const RUN_MIN_MS = 50;
const RUN_MAX_MS = 1500;
/** Chance, per durable reservation, that an armed node kills itself right after it. */
const HOOK_PROBABILITY = 0.03;

describe('single node: SIGKILL at random moments', () => {
  let token: SoftHsmToken;
  let sockDir: string;
  let home: KmsHome;
  const sims: ValidatorSimulator[] = [];

  before(async () => {
    token = await createSoftHsmToken();
    sockDir = await mkdtemp(join(tmpdir(), 'ckms-chaos-'));
    await generateKeys(token, [{ label: 'chaos-key', type: 'ed25519' }]);
  });

  after(async () => {
    await killAllKms();
    await Promise.all(sims.map((s) => s.close()));
    await home?.cleanup();
    await rm(sockDir, { recursive: true, force: true });
    await token.cleanup();
  });

  it(`never double-signs nor goes backwards across ≥ ${MIN_KILLS} kills (seed ${SEED})`, {
    timeout: 300_000,
  }, async (t) => {
    const rng = new Rng(SEED);
    const record = new SignRecord();
    for (const listen of ['tcp://127.0.0.1:0', `unix://${join(sockDir, 'sentry.sock')}`]) {
      sims.push(
        new ValidatorSimulator({
          listen,
          chainId: CHAIN,
          protocol: 'v0.38',
          blockTimeMs: 10,
          heights: 1_000_000,
          proposerEvery: 2,
          nilVoteRate: 0.1,
          roundChangeRate: 0.1,
          retryRate: 0.1,
          seed: SEED + sims.length,
          connectTimeoutMs: 60_000,
          record,
        }),
      );
    }
    const validators = await Promise.all(sims.map((s) => s.listen()));
    home = await KmsHome.create({
      token,
      chains: [{ id: CHAIN, keyLabel: 'chaos-key', keyType: 'ed25519', protocol: 'v0.38', validators }],
    });
    const runs = sims.map((s) => s.run());

    /** The chain's state on disk; it always has one (the home was created with it). */
    const onDisk = async (): Promise<SignState> => {
      const s = await readChainState(home.home, CHAIN);
      assert.ok(s !== undefined, 'the chain lost its state');
      return s;
    };
    const history: SignState[] = [await onDisk()];
    /** Checks the state on disk against the last one seen and appends it. */
    const checkDisk = async (when: string): Promise<SignState> => {
      const prev = history[history.length - 1]!;
      const now = await onDisk();
      const order = compareHRS(now, prev);
      assert.ok(order >= 0, `${when}: state went backwards from ${formatHrs(prev)} to ${formatHrs(now)}`);
      if (order === 0 && prev.signBytes.length > 0) {
        assert.ok(
          bytesEqual(now.signBytes, prev.signBytes),
          `${when}: other sign bytes at ${formatHrs(now)}`,
        );
      }
      history.push(now);
      return now;
    };

    let testKills = 0;
    let hookKills = 0;
    const started = Date.now();
    for (
      let cycle = 0;
      (testKills + hookKills < TARGET_KILLS || hookKills === 0) && Date.now() - started < KILL_PHASE_MS;
      cycle++
    ) {
      const armed = cycle % 3 === 2;
      const kms: KmsProcess = armed
        ? home.start({
            args: ['--test-crash-after-reserve'],
            env: { NODE_ENV: 'test', COMETKMS_TEST_CRASH_AFTER_RESERVE: String(HOOK_PROBABILITY) },
          })
        : home.start();
      await kms.waitReady();
      const lifetime = RUN_MIN_MS + rng.int(RUN_MAX_MS - RUN_MIN_MS);
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        kms.exited,
        new Promise<'alive'>((resolve) => {
          timer = setTimeout(() => resolve('alive'), lifetime);
        }),
      ]);
      clearTimeout(timer);
      if (outcome === 'alive') {
        kms.kill('SIGKILL');
        testKills++;
      }
      const exit = await kms.waitExit(10_000);
      assert.equal(
        exit.signal,
        'SIGKILL',
        `cycle ${cycle}: unexpected exit ${JSON.stringify(exit)}: ${kms.stderr}`,
      );
      const state = await checkDisk(`after cycle ${cycle}`);
      if (outcome !== 'alive') {
        assert.ok(armed, `cycle ${cycle}: an unarmed node died on its own`);
        hookKills++;
        // The hook fires between reserve and sign: the reservation is on disk, its signature is not.
        assert.ok(
          state.signBytes.length > 0 && state.signature.length === 0,
          `cycle ${cycle}: hook kill outside the window`,
        );
      }
    }

    // A last, undisturbed run: signing goes on from where the crashes left it.
    const last = history[history.length - 1]!;
    const kms = home.start();
    await kms.waitReady();
    const deadline = Date.now() + 30_000;
    while ((await checkDisk('final run')).height < last.height + 5n) {
      assert.ok(Date.now() < deadline, `no progress after the last restart (stuck at ${formatHrs(last)})`);
      await new Promise((r) => setTimeout(r, 100));
    }
    kms.kill('SIGTERM');
    assert.deepEqual(await kms.waitExit(15_000), { code: 0, signal: null });
    await checkDisk('after the graceful stop');

    await Promise.all(sims.map((s) => s.close()));
    const summaries = (await Promise.allSettled(runs)).map((r, i) =>
      r.status === 'fulfilled' ? r.value : sims[i]!.summary(),
    );
    const signed = summaries.reduce((n, s) => n + s.signed, 0);
    const detail = JSON.stringify({ seed: SEED, testKills, hookKills, summaries }, null, 1);
    assert.deepEqual(record.doubleSigns, [], detail);
    for (const s of summaries) {
      assert.equal(s.doubleSigns, 0, detail);
      assert.equal(s.invalidSignatures, 0, detail);
    }
    assert.ok(testKills + hookKills >= MIN_KILLS, `only ${testKills + hookKills} kills: ${detail}`);
    assert.ok(testKills > 0 && hookKills > 0, `both kinds of kill happened: ${detail}`);
    const final = history[history.length - 1]!;
    t.diagnostic(
      `seed ${SEED}: ${testKills} test kills, ${hookKills} hook kills, ${signed} signatures, ` +
        `height ${history[0]!.height} → ${final.height}, ${record.size} distinct HRS signed`,
    );
    assert.ok(final.height > history[0]!.height, 'the chain moved on');
    assert.ok(signed > 100, `signatures returned: ${detail}`);
  });
});
