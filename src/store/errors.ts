/**
 * The errors of the sign-state stores. Each one means "do not sign this chain now"; they differ
 * in what an operator (or a retry) can do about it.
 */

/** The stored state cannot be used (unreadable, inconsistent, changed behind the store's back). */
export class StateStoreError extends Error {
  override name = 'StateStoreError';
}

/**
 * The chain has no state: nothing ever created one, or it was lost. A missing state is not an
 * empty one (ARCHITECTURE §2 invariant 7): only `cometkms state init` (a key that never signed on
 * the chain) or `cometkms state import` may create it.
 */
export class StateMissingError extends StateStoreError {
  override name = 'StateMissingError';
}

/**
 * The stored state is below one this node has seen before (a restored backup or snapshot, a
 * wiped store, a wrong prefix, a forced import of a lower state): never a new baseline.
 */
export class StateRegressionError extends StateStoreError {
  override name = 'StateRegressionError';
}

/** This node does not (or no longer) hold the leadership a fenced write needs. */
export class NotLeaderError extends Error {
  override readonly name = 'NotLeaderError';
}

/**
 * A majority of the cluster's nodes did not (yet) answer for the high-water marks (peer marks,
 * cluster/peer-marks.ts): the leader does not sign until it can show a majority the HRS.
 */
export class PeerQuorumError extends Error {
  override readonly name = 'PeerQuorumError';
}

/** The text that tells an operator how to give a chain its state. */
export function stateRemedy(chainId: string, config = '<config.toml>'): string {
  const chain = JSON.stringify(chainId);
  return (
    `if this key has never signed on chain ${chain}: cometkms state init --config ${config} --chain ${chain} ` +
    `--height <current height>; otherwise seed the last state it signed: cometkms state import --config ${config} ` +
    `--chain ${chain} --from <priv_validator_state.json>`
  );
}
