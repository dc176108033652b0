import type { RefusalCode } from './decide.ts';

/** What a guard decision was about. */
export type DecisionKind = 'vote' | 'proposal' | 'pubkey' | 'sign_bytes';

/**
 * How a request ended.
 * - `signed`: a new HRS was reserved and its bytes signed.
 * - `resigned`: the same HRS with identical sign bytes: the recorded signature, or a new signature
 *   over the reserved bytes when none had been recorded.
 * - `timestamp_only`: the same HRS with only the timestamp changed: the reserved bytes' signature
 *   and the reserved timestamp were returned.
 * - `served`: a public key was returned (pubkey requests only).
 * - `refused`: a final RemoteSignerError was returned.
 * - `retry`: an empty Message was returned so that the node re-sends the request; nothing signed
 *   was returned.
 */
export type DecisionOutcome = 'signed' | 'resigned' | 'timestamp_only' | 'served' | 'refused' | 'retry';

/**
 * Why a request was answered "try again" (an empty Message): nothing was signed, or nothing
 * signed could be returned safely.
 * - `state_missing`: the chain has no state (never created by `state init|import`, or lost);
 * - `state_regression`: the stored state is below one seen before (restore, wipe, forced import);
 * - `state_unusable`: the stored state is unreadable or was changed behind the store's back;
 * - `not_leader`: this node does not hold the leadership a fenced write needs;
 * - `store_unavailable`: the store did not answer (unknown whether a reservation was applied);
 * - `contention`: the state kept changing under the reservation;
 * - `signer_failed`, `signature_invalid`: the HSM failed, or its signature did not verify;
 * - `record_failed`: a signature that must be recorded before it is returned (secp256k1) was not;
 * - `no_peer_quorum`: the cluster leader could not show a majority of nodes the HRS (peer marks).
 */
export type RetryCode =
  | 'state_missing'
  | 'state_regression'
  | 'state_unusable'
  | 'not_leader'
  | 'store_unavailable'
  | 'contention'
  | 'signer_failed'
  | 'signature_invalid'
  | 'record_failed'
  | 'no_peer_quorum';

/** The retry codes that mean the chain's state needs an operator (the chain's state alarm). */
export const STATE_ALARM_CODES: ReadonlySet<RetryCode> = new Set<RetryCode>([
  'state_missing',
  'state_regression',
  'state_unusable',
]);

/** One event per request handled by a guard (for the audit log and metrics). */
export interface GuardDecision {
  chainId: string;
  kind: DecisionKind;
  /** SignedMsgType of the vote or proposal, when the request carried one */
  type?: number;
  height?: bigint;
  round?: number;
  /** FilePV step: 1 propose, 2 prevote, 3 precommit */
  step?: number;
  outcome: DecisionOutcome;
  /** why it was refused (a RefusalCode) or retried (a RetryCode) */
  code?: RefusalCode | RetryCode;
  /** the reason in words (bounded: peer strings in it are cut, see cometbft/text.ts) */
  reason?: string;
  /** hex SHA-256 of the sign bytes the decision was about, once they were computed */
  signBytesSha256?: string;
  /** from the request reaching the guard (queueing included) to the reply */
  latencyMs: number;
  /** time spent in `Signer.sign`, when it was called */
  hsmMs?: number;
  /** the validator endpoint the request arrived on (see RequestContext) */
  endpoint?: string;
  /** the SecretConnection node id of the requesting node (tcp only) */
  remoteNodeId?: string;
  /** the cluster node that forwarded the request to this leader */
  forwardedBy?: string;
}
