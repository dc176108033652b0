import { bytesEqual } from '../../src/cometbft/bytes.ts';
import {
  copySignState,
  type Reservation,
  type ReserveResult,
  type SignState,
  type SignStateStore,
  sameSignState,
} from '../../src/store/types.ts';

/**
 * A fault to inject into the next `reserve` call.
 * - `throw`: nothing is applied and the call throws (the store was unreachable).
 * - `apply-then-throw`: the reservation is applied durably, then the call throws (the reply was
 *   lost: the caller cannot know it succeeded).
 * - `apply-then-conflict`: the reservation is applied, then the call reports `{ok: false}` with
 *   the new state as `current` (what a client sees when it retries a transaction that had
 *   already been applied).
 */
export type ReserveFault = 'throw' | 'apply-then-throw' | 'apply-then-conflict';

/** Artificial latency per operation, in milliseconds (to make concurrent callers interleave). */
export interface MemoryStoreDelays {
  load?: number;
  reserve?: number;
  record?: number;
}

/**
 * An in-memory {@link SignStateStore} for unit tests, with fault injection. It is a plain
 * compare-and-set register per chain: it does not itself enforce that states only move forward,
 * so that a guard bug shows up in {@link history} instead of being masked.
 */
export class InMemorySignStateStore implements SignStateStore {
  private readonly states = new Map<string, SignState>();
  private readonly histories = new Map<string, SignState[]>();
  private readonly reserveFaults: ReserveFault[] = [];
  private recordFaults = 0;
  private loadFaults = 0;
  private returnFaults = 0;
  private delays: MemoryStoreDelays = {};
  /** Number of `reserve` calls so far (including failed ones). */
  reserveCalls = 0;
  /** Number of `recordSignature` calls so far (including failed ones). */
  recordCalls = 0;
  /** Number of `readyToReturn` calls so far (including failed ones). */
  readyCalls = 0;

  /** Replaces the stored state of `chainId` (test setup: e.g. a reservation left by a crash). */
  setState(chainId: string, state: SignState): void {
    this.states.set(chainId, copySignState(state));
    this.historyOf(chainId).push(copySignState(state));
  }

  /** A copy of the stored state of `chainId` (undefined: none), without delays or faults. */
  peek(chainId: string): SignState | undefined {
    const s = this.states.get(chainId);
    return s === undefined ? undefined : copySignState(s);
  }

  /** Every state `chainId` has held, in order (reservations and recorded signatures). */
  history(chainId: string): SignState[] {
    return this.historyOf(chainId).map(copySignState);
  }

  /** Queues a fault for the next `reserve` call (several calls queue several faults). */
  injectReserveFault(fault: ReserveFault): void {
    this.reserveFaults.push(fault);
  }

  /** Makes the next `recordSignature` call throw without recording anything. */
  failNextRecord(): void {
    this.recordFaults++;
  }

  /** Makes the next `readyToReturn` call throw (what must be durable before a return is not). */
  failNextReadyToReturn(): void {
    this.returnFaults++;
  }

  /** Makes the next `load` call throw. */
  failNextLoad(): void {
    this.loadFaults++;
  }

  /** Sets artificial latencies for later calls. */
  setDelays(delays: MemoryStoreDelays): void {
    this.delays = { ...delays };
  }

  async load(chainId: string): Promise<SignState | undefined> {
    await pause(this.delays.load);
    if (this.loadFaults > 0) {
      this.loadFaults--;
      throw new Error('injected fault: load failed');
    }
    return this.peek(chainId);
  }

  async reserve(chainId: string, expected: SignState, next: SignState): Promise<ReserveResult> {
    this.reserveCalls++;
    await pause(this.delays.reserve);
    const fault = this.reserveFaults.shift();
    if (fault === 'throw') throw new Error('injected fault: reserve failed');
    const current = this.peek(chainId);
    if (current === undefined) throw new Error('no state');
    if (!sameSignState(current, expected)) return { ok: false, current };
    this.setState(chainId, next);
    if (fault === 'apply-then-throw') throw new Error('injected fault: reserve reply lost');
    if (fault === 'apply-then-conflict') return { ok: false, current: copySignState(next) };
    return { ok: true };
  }

  /** Durable or not, a record is applied at once here. */
  async recordSignature(chainId: string, reserved: Reservation, signature: Uint8Array): Promise<void> {
    this.recordCalls++;
    await pause(this.delays.record);
    if (this.recordFaults > 0) {
      this.recordFaults--;
      throw new Error('injected fault: record failed');
    }
    const current = this.peek(chainId);
    const matches =
      current !== undefined &&
      current.height === reserved.height &&
      current.round === reserved.round &&
      current.step === reserved.step &&
      bytesEqual(current.signBytes, reserved.signBytes);
    if (matches) this.setState(chainId, { ...current, signature });
  }

  /** Everything here is applied at once; only an injected fault makes it fail. */
  async readyToReturn(): Promise<void> {
    this.readyCalls++;
    if (this.returnFaults > 0) {
      this.returnFaults--;
      throw new Error('injected fault: not durable');
    }
  }

  async close(): Promise<void> {}

  private historyOf(chainId: string): SignState[] {
    let list = this.histories.get(chainId);
    if (list === undefined) {
      list = [];
      this.histories.set(chainId, list);
    }
    return list;
  }
}

function pause(ms: number | undefined): Promise<void> {
  if (ms === undefined) return Promise.resolve();
  return new Promise((resolve) => setTimeout(resolve, ms));
}
