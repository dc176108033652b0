/**
 * The simulator's ledger of every valid signature it received, used to detect double signs.
 *
 * A double sign is two different sign bytes carrying valid signatures at one (height, round,
 * step) of one chain. Several simulated sentries of one validator share one record, so a KMS
 * that signs conflicting votes for two sentries is caught even though each sentry alone saw
 * only one signature.
 */

import { toHex } from '../cometbft/keys.ts';
import type { HRS } from '../cometbft/types.ts';

/** One signature as received. */
export interface SignEntry {
  signBytes: Uint8Array;
  signature: Uint8Array;
  /** Which simulator received it (its listen address). */
  source: string;
}

/** A detected double sign: `second` conflicts with `first` at the same HRS. */
export interface DoubleSign extends HRS {
  chainId: string;
  first: SignEntry;
  second: SignEntry;
}

/** Outcome of {@link SignRecord.record}. */
export type RecordOutcome = 'new' | 'repeat' | 'double-sign';

export class SignRecord {
  private readonly entries = new Map<string, SignEntry[]>();
  private readonly found: DoubleSign[] = [];

  /**
   * Records a signature the caller has already verified over `signBytes`. Returns `repeat` for
   * sign bytes already seen at this HRS (an identical retry or the timestamp-only path) and
   * `double-sign` for new sign bytes at an HRS that already has different ones.
   */
  record(chainId: string, hrs: HRS, entry: SignEntry): RecordOutcome {
    const key = `${chainId}\u0000${hrs.height}/${hrs.round}/${hrs.step}`;
    const list = this.entries.get(key);
    if (!list) {
      this.entries.set(key, [entry]);
      return 'new';
    }
    const hex = toHex(entry.signBytes);
    if (list.some((e) => toHex(e.signBytes) === hex)) return 'repeat';
    this.found.push({ chainId, ...hrs, first: list[0] as SignEntry, second: entry });
    list.push(entry);
    return 'double-sign';
  }

  /** Every double sign detected so far, in order. */
  get doubleSigns(): readonly DoubleSign[] {
    return this.found;
  }

  /** Number of distinct (chain, HRS) entries recorded. */
  get size(): number {
    return this.entries.size;
  }
}
