/**
 * A {@link SignRecord} that also notes when each new signature arrived, so the demo can measure
 * the failover as the time from the leader's SIGKILL to the first new signature the simulated
 * validator receives — the gap a real validator would see.
 */
import type { HRS } from '../../cometbft/types.ts';
import { type RecordOutcome, type SignEntry, SignRecord } from '../../simulator/sign-record.ts';

/** One new signature as the validator received it. */
export interface Arrival {
  /** performance.now() when it was recorded */
  at: number;
  signBytes: Uint8Array;
}

export class WatchedSignRecord extends SignRecord {
  /** every new signature, in order (a few per block: small) */
  private readonly arrivals: Arrival[] = [];
  private readonly waiters = new Set<{ after: number; resolve: (at: number) => void }>();

  /** New signatures recorded after `after` (a performance.now() value). */
  countAfter(after: number): number {
    return this.arrivalsAfter(after).length;
  }

  /** The new signatures recorded after `after`, in order. */
  arrivalsAfter(after: number): Arrival[] {
    return this.arrivals.filter((a) => a.at > after);
  }

  override record(chainId: string, hrs: HRS, entry: SignEntry): RecordOutcome {
    const outcome = super.record(chainId, hrs, entry);
    if (outcome === 'new') {
      const now = performance.now();
      this.arrivals.push({ at: now, signBytes: entry.signBytes });
      for (const w of [...this.waiters]) {
        if (now > w.after) {
          this.waiters.delete(w);
          w.resolve(now);
        }
      }
    }
    return outcome;
  }

  /**
   * Resolves with the performance.now() of the first new signature recorded after `after`, or
   * with undefined after `timeoutMs` or when `signal` aborts.
   */
  nextNewSignature(after: number, timeoutMs: number, signal: AbortSignal): Promise<number | undefined> {
    const seen = this.arrivals.find((a) => a.at > after);
    if (seen !== undefined) return Promise.resolve(seen.at);
    return new Promise((resolve) => {
      const finish = (at: number | undefined): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        this.waiters.delete(waiter);
        resolve(at);
      };
      const onAbort = (): void => finish(undefined);
      const waiter = { after, resolve: finish };
      const timer = setTimeout(() => finish(undefined), timeoutMs);
      this.waiters.add(waiter);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}
