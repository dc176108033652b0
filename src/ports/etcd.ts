/**
 * The etcd operations CometKMS uses, as one small port (ARCHITECTURE §4): the sign-state store,
 * the leadership and the cluster view talk to etcd only through it. Production goes through
 * `Etcd3Port` (ports/etcd3.ts, a thin adapter over the etcd3 client); the deterministic
 * simulator (sim/) implements it with an in-memory etcd model on simulated time.
 *
 * Revisions and lease ids are int64 and exceed 2^53, so they are decimal strings here, as in
 * etcd3's own types. Keys are strings (CometKMS's keys are ASCII); values are bytes.
 */

/** One key-value as etcd returns it. */
export interface EtcdKv {
  key: string;
  value: Buffer;
  createRevision: string;
  modRevision: string;
  /** '0' when the key is not bound to a lease */
  lease: string;
}

/**
 * One compare of a transaction, always "equal": the key's value, create revision ('0': the key
 * does not exist), mod revision, or lease ('0': none).
 */
export type EtcdCompare =
  | { key: string; target: 'value'; value: Buffer }
  | { key: string; target: 'create'; revision: string }
  | { key: string; target: 'mod'; revision: string }
  | { key: string; target: 'lease'; lease: string };

/** One operation of a transaction branch. */
export type EtcdOp =
  | { op: 'put'; key: string; value: Buffer; lease?: string }
  | { op: 'delete'; key: string }
  | { op: 'range'; key: string };

export interface EtcdTxn {
  compare: EtcdCompare[];
  success: EtcdOp[];
  failure: EtcdOp[];
}

export interface EtcdTxnResult {
  succeeded: boolean;
  /** the store's revision after the transaction (its own, when it wrote) */
  revision: string;
  /** per `range` operation of the branch that ran, in order: the key, or undefined if absent */
  ranges: Array<EtcdKv | undefined>;
}

/** What a single keepalive learned: renewed, the lease is gone, or no answer in time. */
export type KeepaliveAnswer = 'ok' | 'not-found' | 'failed';

/** Callbacks of a watch. Events arrive in revision order; `error` when the stream broke. */
export interface EtcdWatchHandlers {
  put(kv: EtcdKv): void;
  delete(kv: EtcdKv): void;
  error(err: unknown): void;
}

export interface EtcdWatch {
  cancel(): Promise<void>;
}

/**
 * The port. Every call either answers or throws; a throw means "unknown": a transaction that
 * threw may or may not have been applied (callers compare-and-set, so a retry finds out).
 */
export interface EtcdPort {
  /** one linearizable transaction */
  txn(txn: EtcdTxn): Promise<EtcdTxnResult>;
  /** linearizable read of one key */
  get(key: string): Promise<EtcdKv | undefined>;
  /** linearizable read of every key under `prefix` */
  getPrefix(prefix: string): Promise<EtcdKv[]>;
  /** grants a lease; etcd may raise the TTL (the granted one is returned) */
  leaseGrant(ttlS: number): Promise<{ id: string; ttlS: number }>;
  /** one keepalive of `id` on this client's member(s), answered within `timeoutMs` */
  leaseKeepAliveOnce(id: string, timeoutMs: number): Promise<KeepaliveAnswer>;
  leaseRevoke(id: string): Promise<void>;
  /** watches one key, or every key under a prefix; re-established by the client after errors */
  watch(target: { key: string } | { prefix: string }, handlers: EtcdWatchHandlers): EtcdWatch;
}
