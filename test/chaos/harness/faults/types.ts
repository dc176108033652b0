/**
 * What a fault kind is: a small module with one job. `inject` breaks something and returns how
 * to heal it; the runner then lets signing go on, heals, and holds the design to its promise:
 * every fault here is one the design survives, so once healed (and, for faults that destroy
 * state, once the harness has acted as the operator of the documented recovery) signing must
 * resume within a bound. Safety is never the fault's business: the witness judges it.
 */
import type { Rng } from '../../../../src/simulator/rng.ts';
import type { ChaosBed } from '../bed/testbed.ts';
import type { ChainDriver } from '../driver.ts';
import type { History } from '../history.ts';
import type { Operator } from '../operator.ts';

export interface FaultContext {
  bed: ChaosBed;
  rng: Rng;
  operator: Operator;
  history: History;
  drivers: ChainDriver[];
  runDir: string;
  /** records a broken promise of the design that the witness cannot see (fails the run) */
  violation(what: string): void;
}

export interface Injected {
  /** what exactly was done, for the round line and the history */
  detail: string;
  /** undoes the fault (restarts, reconnects, operator recovery) */
  heal(): Promise<void>;
}

export interface FaultKind {
  name: string;
  modes: ReadonlyArray<'single' | 'cluster'>;
  /**
   * What it breaks, so two overlapping faults never fight over one thing (two faults of one
   * layer never overlap); `exclusive` faults run alone.
   */
  layer: 'process' | 'etcd' | 'network' | 'state' | 'hsm' | 'operator' | 'clock';
  exclusive?: boolean;
  /** how long signing is left to run under the fault (default: the runner's) */
  dwellMs?: number;
  inject(ctx: FaultContext): Promise<Injected>;
}

/** Waits `ms` milliseconds. */
export const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
