/**
 * The live view of a running node that the admin API, metrics and CLI read. The runtime builds
 * it; admin/ only renders it. Field names of `NodeStatus` are the `/status` contract of
 * ARCHITECTURE.md §5 (snake_case, numbers as JSON numbers).
 */
export interface NodeStatus {
  node_id: string;
  /** the CometKMS version (package.json) */
  version: string;
  mode: 'single' | 'cluster';
  role: 'leader' | 'follower';
  /** null while no leader is known */
  leader_id: string | null;
  /** fencing term: the create revision of the leader key (cluster), 0 in single-node mode */
  term: number;
  uptime_s: number;
  hsm: HsmStatus;
  cluster?: ClusterStatus;
  chains: ChainStatus[];
}

export interface HsmStatus {
  token_label: string;
  /** the token answered the last health check */
  reachable: boolean;
  /** a logged-in signing session is open (leader only) */
  signing_session: boolean;
  last_error?: string;
}

export interface ClusterStatus {
  etcd_endpoints: string[];
  members: Array<{ node_id: string; forward_addr: string; leader: boolean }>;
  etcd_healthy: boolean;
  leader_changes: number;
}

export interface ChainStatus {
  chain_id: string;
  key_type: string;
  protocol: string;
  /** the consensus address of the chain's key, upper-case hex as CometBFT prints it */
  address: string;
  /** the last reserved HRS; height/round/step as JSON numbers */
  height: number;
  round: number;
  step: number;
  /** ISO time of the last signature this node produced, null if none yet */
  last_signed_at: string | null;
  /** why nothing is signed for this chain until an operator acts (state missing, below this node's high-water mark, unusable); null when its state is usable */
  state_alarm: { code: string; reason: string } | null;
  /** requests this node refused for the chain since it started (final RemoteSignerErrors) */
  refused: number;
  /** of those, the refusals that prevented a double sign */
  double_sign_refused: number;
  /** requests this node answered "try again" because something failed (store, HSM, verification) */
  errors: number;
  validators: Array<{ addr: string; connected: boolean; remote_node_id?: string; connects: number }>;
}
