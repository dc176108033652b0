/**
 * TEST-ONLY fault injection: kill the node with SIGKILL right after a reservation became durable
 * and before the HSM is asked to sign, the window that invariant 2 (reserve before sign) is
 * about. The crash-safety test uses it to prove that a crash there costs at most a missed vote.
 *
 * A hook that kills the signer must be impossible to switch on by accident in production, so it
 * needs three things at once, none of which a config file can supply:
 *   1. the hidden command-line flag `--test-crash-after-reserve` (not listed by `--help`),
 *   2. NODE_ENV=test,
 *   3. COMETKMS_TEST_CRASH_AFTER_RESERVE=<probability in (0, 1]>.
 * With the flag but without 2 or 3 the node refuses to start; without the flag the variables are
 * ignored (and a warning is logged if the probability is set). SECURITY.md documents it.
 */
import type { Reservation, ReserveResult, SignState, SignStateStore } from '../../store/types.ts';

/** The hidden flag of `cometkms start` that arms the hook. */
export const CRASH_FLAG = '--test-crash-after-reserve';
/** The environment variable holding the crash probability. */
export const CRASH_ENV = 'COMETKMS_TEST_CRASH_AFTER_RESERVE';

/**
 * The crash probability to use, or undefined when the hook stays off. Throws when the flag is
 * given without the environment that must accompany it.
 */
export function crashProbability(flag: boolean, env: NodeJS.ProcessEnv): number | undefined {
  if (!flag) return undefined;
  if (env['NODE_ENV'] !== 'test') {
    throw new Error(`${CRASH_FLAG} is a test-only fault hook: it needs NODE_ENV=test`);
  }
  const raw = env[CRASH_ENV];
  const p = raw === undefined || raw === '' ? Number.NaN : Number(raw);
  if (!(p > 0 && p <= 1)) {
    throw new Error(
      `${CRASH_FLAG} needs ${CRASH_ENV} set to a probability in (0, 1], got ${JSON.stringify(raw)}`,
    );
  }
  return p;
}

/**
 * A store that, with probability `p` per successful reservation, SIGKILLs its own process as
 * soon as the reservation is durable. SIGKILL cannot be caught: nothing after the reservation
 * (signing, recording, replying, cleanup) runs, exactly like a power cut at that point.
 */
export class CrashAfterReserveStore implements SignStateStore {
  constructor(
    private readonly inner: SignStateStore,
    private readonly p: number,
    private readonly random: () => number = Math.random,
  ) {}

  load(chainId: string): Promise<SignState | undefined> {
    return this.inner.load(chainId);
  }

  async reserve(chainId: string, expected: SignState, next: SignState): Promise<ReserveResult> {
    const result = await this.inner.reserve(chainId, expected, next);
    if (result.ok && this.random() < this.p) process.kill(process.pid, 'SIGKILL');
    return result;
  }

  recordSignature(
    chainId: string,
    reserved: Reservation,
    signature: Uint8Array,
    opts: { durable: boolean },
  ): Promise<void> {
    return this.inner.recordSignature(chainId, reserved, signature, opts);
  }

  readyToReturn(chainId: string, reserved: Reservation): Promise<void> {
    return this.inner.readyToReturn(chainId, reserved);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
