/**
 * The protections `--plant-bug NAME` switches off, one at a time, through the options the
 * simulator passes to the code under test (never through globals or the environment, and never
 * from `cometkms start`). Each must be caught within its seed budget: that is what shows the
 * checker has teeth (scripts/sim-ci.sh checks every one).
 */
import type { WorldOptions } from './world.ts';

export interface PlantedBug {
  what: string;
  /** the world it runs in: what it switches off, and more chains when it needs them */
  options: Pick<WorldOptions, 'storeBugs' | 'guardBugs' | 'noPeerMarks' | 'restoreAnytime'> & {
    chains?: number;
  };
  /** seeds `--plant-bug` runs by default; the bug must be caught within them */
  seedBudget: number;
}

export const PLANTED_BUGS: Record<string, PlantedBug> = {
  'sign-before-reserve': {
    what: 'the guard signs a new HRS before the store confirmed its reservation',
    options: { guardBugs: { signBeforeReserve: true } },
    seedBudget: 20,
  },
  'no-fence': {
    what: 'reservations leave out the leader-key compares (value, create revision, lease)',
    options: { storeBugs: { noFence: true } },
    seedBudget: 20,
  },
  'no-state-compare': {
    what: "reservations leave out the state key's mod-revision compare",
    options: { storeBugs: { noStateCompare: true } },
    seedBudget: 20,
  },
  'batch-one-state-compare': {
    what: "a batched transaction carries only its first chain's state compare (the others ride on it)",
    // batches of two or more writes need three chains or more (one in flight, two waiting)
    options: { storeBugs: { batchOneStateCompare: true }, chains: 5 },
    seedBudget: 50,
  },
  'no-high-water': {
    what: 'states read from etcd are not checked against the high-water marks',
    options: { storeBugs: { noHighWater: true } },
    seedBudget: 40,
  },
  'no-peer-marks': {
    what:
      'a new leader serves on its own marks alone and signs without a majority holding the HRS, ' +
      'with etcd restored at any time (a node that missed the last heights can lead)',
    options: { noPeerMarks: true, restoreAnytime: true },
    seedBudget: 60,
  },
};

export function plantedBug(name: string): PlantedBug | undefined {
  return Object.hasOwn(PLANTED_BUGS, name) ? PLANTED_BUGS[name] : undefined;
}
