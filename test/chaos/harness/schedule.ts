/**
 * Which fault kinds each round injects, from the seed alone (so a seed replays its schedule
 * whatever the cluster did). The first rounds go once through every kind in a seeded order, so
 * a short run still covers them all; after that a round injects one kind, or two of different
 * layers overlapping (never an exclusive one).
 */
import { Rng } from '../../../src/simulator/rng.ts';
import type { FaultKind } from './faults/types.ts';

/** Chance that a round after the first pass overlaps two faults. */
const OVERLAP = 0.25;

export class Schedule {
  private readonly rng: Rng;
  private readonly firstPass: FaultKind[];
  private round = 0;

  constructor(
    seed: number,
    private readonly kinds: readonly FaultKind[],
  ) {
    if (kinds.length === 0) throw new Error('a schedule needs at least one fault kind');
    this.rng = new Rng(seed);
    this.firstPass = [...kinds];
    for (let i = this.firstPass.length - 1; i > 0; i--) {
      const j = this.rng.int(i + 1);
      [this.firstPass[i], this.firstPass[j]] = [this.firstPass[j]!, this.firstPass[i]!];
    }
  }

  /** The kinds of the next round. */
  next(): FaultKind[] {
    this.round++;
    if (this.round <= this.firstPass.length) return [this.firstPass[this.round - 1]!];
    const first = this.kinds[this.rng.int(this.kinds.length)]!;
    if (!this.rng.chance(OVERLAP) || first.exclusive) return [first];
    const others = this.kinds.filter((k) => !k.exclusive && k.layer !== first.layer);
    if (others.length === 0) return [first];
    return [first, others[this.rng.int(others.length)]!];
  }
}
