import { toHexUpper } from '../cometbft/keys.ts';
import type { Proposal, Vote } from '../cometbft/types.ts';

/** What request validation compares against. */
export interface ValidationContext {
  /** height of the last reserved state (0 when nothing was ever signed) */
  lastHeight: bigint;
  /** refuse a height more than this above `lastHeight`; unset: no limit */
  maxHeightJump?: number;
  /** the key's address; unset: `validator_address` is not checked */
  validatorAddress?: Uint8Array;
}

/**
 * Why `vote` must not be signed, or `undefined` if it may proceed to the HRS check. Covers what
 * FilePV leaves to a crash or to the node (spec §7.1, §8 "recommended KMS extras"); the vote type
 * is checked by the caller; hash lengths and timestamp ranges by the sign-bytes encoder.
 */
export function voteProblem(vote: Vote, ctx: ValidationContext): string | undefined {
  return heightRoundProblem(vote.height, vote.round, ctx) ?? addressProblem(vote.validatorAddress, ctx);
}

/** Why `proposal` must not be signed, or `undefined` if it may proceed to the HRS check. */
export function proposalProblem(proposal: Proposal, ctx: ValidationContext): string | undefined {
  if (proposal.polRound < -1) return `invalid pol_round ${proposal.polRound}`;
  return heightRoundProblem(proposal.height, proposal.round, ctx);
}

function heightRoundProblem(height: bigint, round: number, ctx: ValidationContext): string | undefined {
  // CometBFT's own ValidateBasic rejects height 0 as well as negative heights: no honest node
  // asks for either.
  if (height <= 0n) return `invalid height ${height}`;
  if (round < 0) return `invalid round ${round}`;
  // The jump limit needs a baseline: a fresh state (height 0) accepts any first height; seed it
  // with `cometkms state import` to have the limit from the first request on.
  if (ctx.maxHeightJump !== undefined && ctx.lastHeight > 0n) {
    const limit = ctx.lastHeight + BigInt(ctx.maxHeightJump);
    if (height > limit) {
      return `height jump too large. Got ${height}, last height ${ctx.lastHeight}, max jump ${ctx.maxHeightJump}`;
    }
  }
  return undefined;
}

function addressProblem(address: Uint8Array, ctx: ValidationContext): string | undefined {
  const want = ctx.validatorAddress;
  if (want === undefined || address.length === 0) return undefined;
  if (address.length === want.length && address.every((b, i) => b === want[i])) return undefined;
  return `validator address mismatch: got ${toHexUpper(address)}, want ${toHexUpper(want)}`;
}
