/**
 * Time as a port: the wall clock and timers the cluster layer uses (leadership ticks and
 * deadlines, the cluster view's polling, the high-water marks' deferred flush). Production uses
 * {@link systemClock}; the deterministic simulator (sim/) passes a clock on simulated time, so a
 * simulated run reads no real clock and arms no real timer.
 */

/** A scheduled callback; `cancel` is idempotent. */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /**
   * a monotonic count of milliseconds (simulated time in the simulator). Only differences mean
   * anything: every caller measures a deadline or a silence, and a wall-clock jump (NTP, an
   * operator, a VM resume) must not expire a lease early nor keep a dead one alive.
   */
  now(): number;
  /** runs `fn` once after `ms`; `unref`: the timer alone does not keep the process alive */
  setTimeout(fn: () => void, ms: number, opts?: { unref?: boolean }): Timer;
  /** runs `fn` every `ms` until cancelled */
  setInterval(fn: () => void, ms: number): Timer;
  /** runs `fn` soon, after the current turn (setImmediate) */
  defer(fn: () => void): void;
}

/** The real clock and timers; `now` is `performance.now()`, which never jumps. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout(fn, ms, opts) {
    const t = setTimeout(fn, ms);
    if (opts?.unref) t.unref();
    return { cancel: () => clearTimeout(t) };
  },
  setInterval(fn, ms) {
    const t = setInterval(fn, ms);
    return { cancel: () => clearInterval(t) };
  },
  defer(fn) {
    setImmediate(fn);
  },
};
