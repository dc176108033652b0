/** Every fault kind of the harness, by name. */
import { etcdFaults } from './etcd.ts';
import { hsmFaults } from './hsm.ts';
import { networkFaults } from './network.ts';
import { operatorFaults } from './operator.ts';
import { processFaults } from './process.ts';
import { stateFaults } from './state.ts';
import type { FaultKind } from './types.ts';

export const FAULT_KINDS: readonly FaultKind[] = [
  ...processFaults,
  ...etcdFaults,
  ...networkFaults,
  ...stateFaults,
  ...hsmFaults,
  ...operatorFaults,
];

/** The kinds that apply to `mode`, restricted to `names` when given (unknown names throw). */
export function faultKinds(mode: 'single' | 'cluster', names?: readonly string[]): FaultKind[] {
  if (names !== undefined) {
    for (const n of names) {
      if (!FAULT_KINDS.some((k) => k.name === n)) {
        throw new Error(`unknown fault kind ${n}; known: ${FAULT_KINDS.map((k) => k.name).join(', ')}`);
      }
    }
  }
  return FAULT_KINDS.filter((k) => k.modes.includes(mode) && (names === undefined || names.includes(k.name)));
}
