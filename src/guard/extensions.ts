import { isZeroBlockId } from '../cometbft/signbytes.ts';
import { type ProtocolVersion, SignedMsgType, type Vote } from '../cometbft/types.ts';

/**
 * What to do about a vote's extension (spec §7.2 step 3, §10.1).
 * - `sign`: sign VoteExtensionSignBytes and return `extension_signature` (a node with extensions
 *   enabled panics on a non-nil precommit without one).
 * - `forbid`: return no `extension_signature` (the node panics on one for a prevote or a nil
 *   precommit) and refuse a non-empty `extension`.
 * - `ignore`: return no `extension_signature`; a stray `extension` is not an error.
 */
export type ExtensionPolicy = 'sign' | 'forbid' | 'ignore';

/** The extension policy for `vote` under `protocol` (v1.0: honouring `skip_extension_signing`). */
export function extensionPolicy(
  protocol: ProtocolVersion,
  vote: Vote,
  skipExtensionSigning: boolean,
): ExtensionPolicy {
  switch (protocol) {
    case 'v0.34':
    case 'v0.37':
      return 'ignore';
    case 'v1.0':
      if (skipExtensionSigning) return 'ignore';
      return nonNilPrecommit(vote) ? 'sign' : 'forbid';
    case 'v0.38':
      return nonNilPrecommit(vote) ? 'sign' : 'forbid';
  }
}

function nonNilPrecommit(vote: Vote): boolean {
  return vote.type === SignedMsgType.Precommit && !isZeroBlockId(vote.blockId);
}
