import type { KeyType, ProtocolVersion } from '../cometbft/types.ts';

/**
 * A validated CometKMS configuration (ARCHITECTURE.md §5). Secrets are never part of it: only
 * the paths of the files that hold them.
 */
export interface Config {
  /** absolute path of the file this was read from */
  path: string;
  node: NodeSection;
  hsm: HsmSection;
  admin: AdminSection;
  /** absent in single-node mode */
  cluster?: ClusterSection;
  chains: ChainSection[];
}

export interface NodeSection {
  id: string;
  /** absolute; state files, lock, privval identity key */
  home: string;
}

export interface HsmSection {
  /** path of the PKCS#11 module (.so) */
  module: string;
  /** name of a profile file in hsm/ */
  profile: string;
  token_label: string;
  /** absent: the PIN comes from COMETKMS_HSM_PIN */
  pin_file?: string;
}

export interface AdminSection {
  /** host:port */
  listen: string;
  token_file?: string;
  /** routes that need no token; default ["/healthz", "/metrics"] */
  public_routes: string[];
  tls_cert_file?: string;
  tls_key_file?: string;
}

export interface ClusterSection {
  etcd_endpoints: string[];
  lease_ttl_s: number;
  /** prefix of every key CometKMS writes in etcd, so clusters can share one etcd */
  etcd_prefix: string;
  /** deadline of one unary etcd call */
  etcd_call_timeout_ms: number;
  etcd_username?: string;
  etcd_password_file?: string;
  forward_listen: string;
  forward_advertise: string;
  tls_ca_file?: string;
  tls_cert_file?: string;
  tls_key_file?: string;
}

export interface ChainSection {
  id: string;
  key_label: string;
  key_type: KeyType;
  protocol: ProtocolVersion;
  /** refuse a height more than this far above the last signed one (default 100 000) */
  max_height_jump: number;
  validators: ValidatorSection[];
}

export interface ValidatorSection {
  /** tcp://host:port or unix:///abs/path */
  addr: string;
}
