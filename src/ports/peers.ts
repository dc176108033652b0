/**
 * The other KMS nodes of the cluster, as one small port: what a node asks them over the mutually
 * authenticated forwarding channel besides forwarded requests (docs/ARCHITECTURE.md, "Peer marks").
 *   - `marks`: a new leader asks a majority for their high-water marks before it serves, each
 *     answer carrying the asker's ballot as a promise (cluster/peer-marks.ts);
 *   - `raise`: the leader has a majority raise their marks to a reserved HRS before it signs it;
 *   - `heartbeat`: a follower checks that its leader is alive.
 * Production: `ForwardClient` (cluster/forward.ts) over mTLS; the deterministic simulator (sim/):
 * its simulated network, so that pauses, crashes and partitions reach these calls too.
 */
import type { HRS } from '../cometbft/types.ts';

/** A node as the member registry names it: its id and where its forwarding server listens. */
export interface PeerAddress {
  nodeId: string;
  advertise: string;
}

/** One chain's mark. */
export interface PeerMark extends HRS {
  chainId: string;
}

/** A node's answer to "marks?": its id and its high-water mark of every chain it has one for. */
export interface PeerMarks {
  nodeId: string;
  marks: PeerMark[];
}

export interface PeerPort {
  /**
   * Asks `peer` to promise `ballot` (durably: it then accepts raises of that ballot only) and
   * to tell its marks. Undefined when it gave no valid answer within `deadlineMs`: unreachable,
   * silent, an identity other than `peer.nodeId`, or a node too old to know the request. Never
   * rejects.
   */
  marks(peer: PeerAddress, ballot: string, deadlineMs: number): Promise<PeerMarks | undefined>;
  /**
   * Asks `peer` to raise its mark of `mark.chainId` to `mark` durably, under `ballot`. True only
   * when it did: false when it promised another ballot since, does not serve the chain, failed,
   * or gave no answer within `deadlineMs`. Never rejects.
   */
  raise(peer: PeerAddress, ballot: string, mark: PeerMark, deadlineMs: number): Promise<boolean>;
  /**
   * Whether `peer` answered one heartbeat within `deadlineMs`. Any answer counts, an old node's
   * "unknown chain" included: it shows the process is alive and reading. Never rejects.
   */
  heartbeat(peer: PeerAddress, deadlineMs: number): Promise<boolean>;
}
