/**
 * An in-memory etcd for unit tests of the code that talks to etcd through the EtcdPort
 * (src/ports/etcd.ts): keys with create/mod revisions and leases, transactions with compares,
 * and a gate that lets a test hold transactions "in flight" (parked, not yet applied) and apply
 * them one at a time, change keys behind the caller's back meanwhile, or fail a call.
 *
 * Only what the sign-state store uses is modelled beyond the basics: watches are not (the
 * deterministic simulator's etcd model, sim/etcd-model.ts, is the full one; the compare and put
 * rules are its own, shared).
 */
import { compareHolds, type Entry, putEntry, toKv } from '../../sim/etcd-model.ts';
import type {
  EtcdKv,
  EtcdOp,
  EtcdPort,
  EtcdTxn,
  EtcdTxnResult,
  EtcdWatch,
  KeepaliveAnswer,
} from '../../src/ports/etcd.ts';

/** A transaction waiting at the gate. */
interface Parked {
  txn: EtcdTxn;
  resolve(res: EtcdTxnResult): void;
  reject(err: unknown): void;
}

export class MemoryEtcd implements EtcdPort {
  readonly #kvs = new Map<string, Entry>();
  readonly #leases = new Set<string>();
  #revision = 1;
  #nextLease = 1000;
  #gated = false;
  readonly #parked: Parked[] = [];
  /** every transaction received, in order (applied or not) */
  readonly txns: EtcdTxn[] = [];
  /** linearizable reads received (`get`) */
  gets = 0;

  /** From now on, transactions wait at the gate until {@link applyNext} or {@link failNext}. */
  hold(): void {
    this.#gated = true;
  }

  /** Applies every parked transaction and lets later ones through at once. */
  open(): void {
    this.#gated = false;
    while (this.#parked.length > 0) this.applyNext();
  }

  /** Transactions parked at the gate. */
  get parked(): number {
    return this.#parked.length;
  }

  /** Applies the oldest parked transaction and answers it. */
  applyNext(): EtcdTxnResult {
    const p = this.#parked.shift();
    if (p === undefined) throw new Error('MemoryEtcd: no transaction is parked');
    const res = this.apply(p.txn);
    p.resolve(res);
    return res;
  }

  /** Answers the oldest parked transaction with `err`; `applied`: apply it first (a lost reply). */
  failNext(err: Error, applied = false): void {
    const p = this.#parked.shift();
    if (p === undefined) throw new Error('MemoryEtcd: no transaction is parked');
    if (applied) this.apply(p.txn);
    p.reject(err);
  }

  /** Resolves once `n` transactions are parked (bounded: rejects after `ms`). */
  async waitParked(n: number, ms = 2_000): Promise<void> {
    const until = Date.now() + ms;
    while (this.#parked.length < n) {
      if (Date.now() > until) throw new Error(`MemoryEtcd: ${this.#parked.length} parked, want ${n}`);
      await new Promise((r) => setImmediate(r));
    }
  }

  /** Writes a key directly (another writer: an operator, another node). */
  put(key: string, value: Buffer | string, lease = '0'): string {
    this.apply({ compare: [], success: [{ op: 'put', key, value: Buffer.from(value), lease }], failure: [] });
    return String(this.#revision);
  }

  /** Deletes a key directly. */
  delete(key: string): void {
    this.apply({ compare: [], success: [{ op: 'delete', key }], failure: [] });
  }

  /** A key as stored, without going through the gate. */
  peek(key: string): EtcdKv | undefined {
    const e = this.#kvs.get(key);
    return e === undefined ? undefined : toKv(key, e);
  }

  txn(txn: EtcdTxn): Promise<EtcdTxnResult> {
    this.txns.push(txn);
    if (!this.#gated) return Promise.resolve(this.apply(txn));
    return new Promise((resolve, reject) => this.#parked.push({ txn, resolve, reject }));
  }

  async get(key: string): Promise<EtcdKv | undefined> {
    this.gets++;
    return this.peek(key);
  }

  async getPrefix(prefix: string): Promise<EtcdKv[]> {
    return [...this.#kvs]
      .filter(([k]) => k.startsWith(prefix))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, e]) => toKv(k, e));
  }

  async leaseGrant(ttlS: number): Promise<{ id: string; ttlS: number }> {
    const id = String(this.#nextLease++);
    this.#leases.add(id);
    return { id, ttlS };
  }

  async leaseKeepAliveOnce(id: string): Promise<KeepaliveAnswer> {
    return this.#leases.has(id) ? 'ok' : 'not-found';
  }

  async leaseRevoke(id: string): Promise<void> {
    if (!this.#leases.delete(id)) return;
    for (const [k, e] of [...this.#kvs]) if (e.lease === id) this.delete(k);
  }

  watch(): EtcdWatch {
    throw new Error('MemoryEtcd does not model watches (sim/etcd-model.ts does)');
  }

  /** Applies `txn` atomically at one revision (as etcd does), now. */
  apply(txn: EtcdTxn): EtcdTxnResult {
    const succeeded = txn.compare.every((c) => compareHolds(c, this.#kvs.get(c.key)));
    const ops = succeeded ? txn.success : txn.failure;
    const writes = ops.filter((o) => o.op !== 'range');
    const rev = writes.length > 0 ? ++this.#revision : this.#revision;
    const ranges: Array<EtcdKv | undefined> = [];
    for (const o of ops) {
      if (o.op === 'range') ranges.push(this.peek(o.key));
      else this.#write(o, rev);
    }
    return { succeeded, revision: String(rev), ranges };
  }

  #write(o: Exclude<EtcdOp, { op: 'range' }>, rev: number): void {
    if (o.op === 'delete') this.#kvs.delete(o.key);
    else this.#kvs.set(o.key, putEntry(this.#kvs.get(o.key), Buffer.from(o.value), o.lease ?? '0', rev));
  }
}
