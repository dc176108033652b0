import { compareHRS, type HRS, SignedMsgType, Step } from '../cometbft/types.ts';
import type { SignState } from '../store/types.ts';

export { compareHRS };

/** The FilePV step of a vote type, or `undefined` for a type that is not a vote (spec §7.1). */
export function voteStep(type: number): number | undefined {
  if (type === SignedMsgType.Prevote) return Step.Prevote;
  if (type === SignedMsgType.Precommit) return Step.Precommit;
  return undefined;
}

/** How a requested HRS relates to the last reserved state (FilePV `CheckHRS`). */
export type HrsCheck =
  /** strictly above the last state: a new reservation is needed */
  | { kind: 'higher' }
  /** the same HRS as the last state, which has sign bytes to compare with */
  | { kind: 'same' }
  /** refused, with FilePV's exact error text */
  | { kind: 'refused'; reason: string };

/**
 * FilePV's `CheckHRS` (spec §7.1) with its exact error texts. A lower step in a higher round,
 * or a lower round in a higher height, is "higher".
 */
export function checkHRS(last: SignState, req: HRS): HrsCheck {
  if (last.height > req.height) {
    return { kind: 'refused', reason: `height regression. Got ${req.height}, last height ${last.height}` };
  }
  if (last.height === req.height) {
    if (last.round > req.round) {
      return {
        kind: 'refused',
        reason: `round regression at height ${req.height}. Got ${req.round}, last round ${last.round}`,
      };
    }
    if (last.round === req.round) {
      if (last.step > req.step) {
        return {
          kind: 'refused',
          reason: `step regression at height ${req.height} round ${req.round}. Got ${req.step}, last step ${last.step}`,
        };
      }
      if (last.step === req.step) {
        return last.signBytes.length > 0
          ? { kind: 'same' }
          : { kind: 'refused', reason: 'no SignBytes found' };
      }
    }
  }
  return { kind: 'higher' };
}
