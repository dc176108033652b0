/**
 * The seeded scheduler: one simulated clock and one queue of events ordered by (time, sequence).
 * `run` takes the next event, advances simulated time to it, runs it, then lets every promise
 * continuation it unblocked run to completion before the next event. Nothing in a simulated run
 * reads a real clock, arms a real timer or does real I/O, so the same seed gives the same
 * history, byte for byte.
 */
import { Rng } from '../src/simulator/rng.ts';

/** Who an event belongs to: a node incarnation can be paused (its events wait) or crashed (dropped). */
export interface Owner {
  readonly name: string;
  /** false once crashed: its events are dropped */
  alive: boolean;
  /** while true its events are held until it resumes */
  paused: boolean;
  /** events that came due while paused, in order */
  held: Array<() => void>;
}

interface Event {
  at: number;
  seq: number;
  owner: Owner | undefined;
  fn: () => void;
}

/** A binary min-heap of events by (at, seq). */
class EventHeap {
  readonly #items: Event[] = [];

  get size(): number {
    return this.#items.length;
  }

  push(e: Event): void {
    const a = this.#items;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }

  pop(): Event | undefined {
    const a = this.#items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && before(a[l]!, a[m]!)) m = l;
        if (r < a.length && before(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

function before(a: Event, b: Event): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/** Lets every pending promise continuation run (the microtask queue drains before it resolves). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class Scheduler {
  readonly rng: Rng;
  #now = 0;
  #seq = 0;
  readonly #queue = new EventHeap();
  steps = 0;

  constructor(seed: number, startMs = 1_700_000_000_000) {
    this.rng = new Rng(seed);
    this.#now = startMs;
  }

  get now(): number {
    return this.#now;
  }

  /** Runs `fn` at `now + delayMs` (as `owner`, if given). */
  at(delayMs: number, fn: () => void, owner?: Owner): void {
    this.#queue.push({ at: this.#now + Math.max(0, delayMs), seq: this.#seq++, owner, fn });
  }

  /** An integer in [min, max]. */
  between(min: number, max: number): number {
    return min + this.rng.int(max - min + 1);
  }

  /** Releases what `owner` held while paused, in order, as events due now. */
  resume(owner: Owner): void {
    owner.paused = false;
    const held = owner.held.splice(0);
    for (const fn of held) this.at(0, fn, owner);
  }

  /**
   * Runs events until `maxSteps` were run, the queue is empty, or `stop()` says so (checked after
   * every step, once the step's continuations have run).
   */
  async run(maxSteps: number, afterStep: () => boolean): Promise<void> {
    while (this.steps < maxSteps) {
      const e = this.#queue.pop();
      if (e === undefined) return;
      this.#now = e.at;
      const owner = e.owner;
      if (owner !== undefined && !owner.alive) continue;
      if (owner?.paused) {
        owner.held.push(e.fn);
        continue;
      }
      this.steps++;
      e.fn();
      await settle();
      if (afterStep()) return;
    }
  }
}
