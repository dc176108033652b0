/** What a guard decision was about. */
export type DecisionKind = 'vote' | 'proposal' | 'pubkey' | 'sign_bytes';

/**
 * How a request ended.
 * - `signed`: a new HRS was reserved and its bytes signed.
 * - `resigned`: the same HRS with identical sign bytes: the stored signature, or a new signature
 *   over the reserved bytes when none had been recorded.
 * - `timestamp_only`: the same HRS with only the timestamp changed: the reserved bytes' signature
 *   and the reserved timestamp were returned.
 * - `served`: a public key was returned (pubkey requests only).
 * - `refused`: a final RemoteSignerError was returned.
 * - `retry`: an empty Message was returned so that the node re-sends the request; nothing signed
 *   was returned.
 */
export type DecisionOutcome = 'signed' | 'resigned' | 'timestamp_only' | 'served' | 'refused' | 'retry';

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
  /** why it was refused or retried, or what went wrong on an otherwise successful path */
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
