/**
 * An etcd model for the simulator: one linearizable key-value store with revisions, leases that
 * expire on simulated time, and watches; plus the faults etcd can have (a member down, quorum
 * lost, a wipe, a restore to an older revision). `SimEtcdClient` is one node's view of it through
 * the EtcdPort, with latency, lost replies, calls whose effect may or may not have been applied,
 * and partitions between that node and etcd.
 */
import type {
  EtcdCompare,
  EtcdKv,
  EtcdOp,
  EtcdPort,
  EtcdTxn,
  EtcdTxnResult,
  EtcdWatch,
  EtcdWatchHandlers,
  KeepaliveAnswer,
} from '../src/ports/etcd.ts';
import type { Owner, Scheduler } from './scheduler.ts';

/** One key as etcd keeps it. Shared with test/helpers/memory-etcd.ts, like the rules below. */
export interface Entry {
  value: Buffer;
  createRev: number;
  modRev: number;
  lease: string;
}

interface Lease {
  id: string;
  ttlMs: number;
  expiresAt: number;
}

interface Snapshot {
  revision: number;
  kvs: Map<string, Entry>;
  leases: Map<string, Lease>;
}

/** Who wrote: a node's KMS code, or the simulated operator. */
export interface Writer {
  node: string;
  kind: 'kms' | 'operator';
}

/** Told about every committed change of a key (after it is applied). */
export type CommitObserver = (key: string, entry: EtcdKv | undefined, writer: Writer | undefined) => void;

interface WatchEntry {
  node: string;
  owner: Owner;
  target: { key: string } | { prefix: string };
  handlers: EtcdWatchHandlers;
  cancelled: boolean;
  /** events held while the node cannot reach etcd */
  pending: Array<{ kind: 'put' | 'delete'; kv: EtcdKv }>;
  /** the time of the last delivery scheduled, so that events keep their order */
  lastAt: number;
}

const MEMBERS = 3;
const SNAPSHOT_EVERY = 40;
const SNAPSHOTS_KEPT = 8;

/** Whether compare `c` holds for `e`, the entry at `c.key` (undefined: no such key). */
export function compareHolds(c: EtcdCompare, e: Entry | undefined): boolean {
  switch (c.target) {
    case 'value':
      return e?.value.equals(c.value) ?? false;
    case 'create':
      return String(e?.createRev ?? 0) === c.revision;
    case 'mod':
      return String(e?.modRev ?? 0) === c.revision;
    case 'lease':
      return (e?.lease ?? '0') === c.lease;
  }
}

/** The entry a put at revision `rev` leaves over `old` (its create revision stays). */
export function putEntry(old: Entry | undefined, value: Buffer, lease: string, rev: number): Entry {
  return { value, createRev: old?.createRev ?? rev, modRev: rev, lease };
}

export function toKv(key: string, e: Entry): EtcdKv {
  return {
    key,
    value: e.value,
    createRevision: String(e.createRev),
    modRevision: String(e.modRev),
    lease: e.lease,
  };
}

export class EtcdModel {
  readonly #s: Scheduler;
  #kvs = new Map<string, Entry>();
  #leases = new Map<string, Lease>();
  #revision = 1;
  #snapshots: Snapshot[] = [];
  readonly #watches: WatchEntry[] = [];
  readonly membersUp: boolean[] = Array.from({ length: MEMBERS }, () => true);
  /** nodes cut off from every etcd member */
  readonly partitioned = new Set<string>();
  /** chance that a call is slow or fails, its effect applied or not */
  callFaultRate = 0.01;
  onCommit: CommitObserver = () => undefined;

  constructor(scheduler: Scheduler) {
    this.#s = scheduler;
  }

  get revision(): number {
    return this.#revision;
  }

  get members(): number {
    return MEMBERS;
  }

  quorum(): boolean {
    return this.membersUp.filter(Boolean).length * 2 > MEMBERS;
  }

  /** Whether `node` can reach the cluster (and through which members, for keepalives). */
  reachable(node: string, member?: number): boolean {
    if (this.partitioned.has(node) || !this.quorum()) return false;
    return member === undefined || this.membersUp[member] === true;
  }

  /** A copy of one key, for the checker and the operator. */
  peek(key: string): EtcdKv | undefined {
    const e = this.#kvs.get(key);
    return e === undefined ? undefined : toKv(key, e);
  }

  // --- operations, each applied atomically at one point of simulated time ---

  txn(txn: EtcdTxn, writer: Writer | undefined): EtcdTxnResult {
    const succeeded = txn.compare.every((c) => compareHolds(c, this.#kvs.get(c.key)));
    const ops = succeeded ? txn.success : txn.failure;
    const ranges: Array<EtcdKv | undefined> = [];
    const writes = ops.filter((o) => o.op !== 'range');
    const changes = writes.filter((o) => o.op === 'put' || this.#kvs.has(o.key));
    if (changes.length === 0) {
      for (const o of ops) if (o.op === 'range') ranges.push(this.peek(o.key));
      return { succeeded, revision: String(this.#revision), ranges };
    }
    const rev = ++this.#revision;
    const events: Array<[string, EtcdKv | undefined]> = [];
    for (const o of ops) {
      if (o.op === 'range') ranges.push(this.peek(o.key));
      else events.push([o.key, this.#write(o, rev)]);
    }
    for (const [key, kv] of events) this.#committed(key, kv, writer);
    this.#maybeSnapshot();
    return { succeeded, revision: String(rev), ranges };
  }

  get(key: string): EtcdKv | undefined {
    return this.peek(key);
  }

  getPrefix(prefix: string): EtcdKv[] {
    const out: EtcdKv[] = [];
    for (const [k, e] of this.#kvs) if (k.startsWith(prefix)) out.push(toKv(k, e));
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  grant(ttlS: number): { id: string; ttlS: number } {
    const id = String(1 + this.#s.rng.int(2 ** 31 - 2));
    const lease = { id, ttlMs: ttlS * 1000, expiresAt: this.#s.now + ttlS * 1000 };
    this.#leases.set(id, lease);
    this.#scheduleExpiry(lease);
    return { id, ttlS };
  }

  keepalive(id: string): KeepaliveAnswer {
    const lease = this.#leases.get(id);
    if (lease === undefined) return 'not-found';
    lease.expiresAt = this.#s.now + lease.ttlMs;
    this.#scheduleExpiry(lease);
    return 'ok';
  }

  revoke(id: string): void {
    if (!this.#leases.delete(id)) return;
    this.#dropLeaseKeys(id);
  }

  watch(node: string, owner: Owner, target: WatchEntry['target'], handlers: EtcdWatchHandlers): EtcdWatch {
    const w: WatchEntry = { node, owner, target, handlers, cancelled: false, pending: [], lastAt: 0 };
    this.#watches.push(w);
    return {
      cancel: async () => {
        w.cancelled = true;
      },
    };
  }

  // --- faults ---

  /** A member goes down or comes back; regaining quorum renews every lease (etcd does too). */
  setMember(i: number, up: boolean): void {
    const had = this.quorum();
    this.membersUp[i] = up;
    if (!had && this.quorum()) {
      for (const l of this.#leases.values()) {
        l.expiresAt = this.#s.now + l.ttlMs;
        this.#scheduleExpiry(l);
      }
    }
  }

  /** Cuts `node` off from etcd, or heals the cut (held watch events are then delivered). */
  setPartitioned(node: string, cut: boolean): void {
    if (cut) {
      this.partitioned.add(node);
      return;
    }
    this.partitioned.delete(node);
    for (const w of this.#watches) {
      if (w.node !== node || w.cancelled) continue;
      for (const ev of w.pending.splice(0)) this.#deliver(w, ev.kind, ev.kv);
    }
  }

  /** Everything is lost: a new, empty cluster (revisions start again at 1). */
  wipe(): void {
    this.#kvs = new Map();
    this.#leases = new Map();
    this.#revision = 1;
    this.#snapshots = [];
  }

  /** Restores the oldest kept snapshot; false when there is none. Leases come back renewed. */
  restoreOldest(): number | undefined {
    const snap = this.#snapshots[0];
    if (snap === undefined) return undefined;
    this.#kvs = new Map([...snap.kvs].map(([k, e]) => [k, { ...e }]));
    this.#leases = new Map([...snap.leases].map(([k, l]) => [k, { ...l, expiresAt: this.#s.now + l.ttlMs }]));
    for (const l of this.#leases.values()) this.#scheduleExpiry(l);
    this.#revision = snap.revision;
    this.#snapshots = [];
    return snap.revision;
  }

  // --- internals ---

  #write(o: EtcdOp, rev: number): EtcdKv | undefined {
    if (o.op === 'delete') {
      this.#kvs.delete(o.key);
      return undefined;
    }
    if (o.op !== 'put') return undefined;
    const lease = o.lease ?? '0';
    if (lease !== '0' && !this.#leases.has(lease)) throw new Error('etcdserver: requested lease not found');
    const e = putEntry(this.#kvs.get(o.key), o.value, lease, rev);
    this.#kvs.set(o.key, e);
    return toKv(o.key, e);
  }

  #committed(key: string, kv: EtcdKv | undefined, writer: Writer | undefined): void {
    this.onCommit(key, kv, writer);
    const deleted = kv ?? {
      key,
      value: Buffer.alloc(0),
      createRevision: '0',
      modRevision: String(this.#revision),
      lease: '0',
    };
    for (const w of this.#watches) {
      if (w.cancelled) continue;
      const match = 'key' in w.target ? w.target.key === key : key.startsWith(w.target.prefix);
      if (match) this.#deliver(w, kv === undefined ? 'delete' : 'put', deleted);
    }
  }

  #deliver(w: WatchEntry, kind: 'put' | 'delete', kv: EtcdKv): void {
    if (this.partitioned.has(w.node)) {
      w.pending.push({ kind, kv });
      return;
    }
    const at = Math.max(this.#s.now + this.#s.between(1, 6), w.lastAt);
    w.lastAt = at;
    this.#s.at(
      at - this.#s.now,
      () => {
        if (!w.cancelled) w.handlers[kind](kv);
      },
      w.owner,
    );
  }

  #scheduleExpiry(lease: Lease): void {
    const at = lease.expiresAt;
    this.#s.at(at - this.#s.now, () => {
      const l = this.#leases.get(lease.id);
      // renewed since, revoked, or etcd without quorum (leases do not expire then)
      if (l === undefined || l.expiresAt > this.#s.now || !this.quorum()) return;
      this.#leases.delete(lease.id);
      this.#dropLeaseKeys(lease.id);
    });
  }

  #dropLeaseKeys(id: string): void {
    const keys = [...this.#kvs].filter(([, e]) => e.lease === id).map(([k]) => k);
    if (keys.length === 0) return;
    this.txn(
      { compare: [], success: keys.map((key) => ({ op: 'delete' as const, key })), failure: [] },
      undefined,
    );
  }

  #maybeSnapshot(): void {
    if (this.#revision % SNAPSHOT_EVERY !== 0) return;
    this.#snapshots.push({
      revision: this.#revision,
      kvs: new Map([...this.#kvs].map(([k, e]) => [k, { ...e }])),
      leases: new Map([...this.#leases].map(([k, l]) => [k, { ...l }])),
    });
    if (this.#snapshots.length > SNAPSHOTS_KEPT) this.#snapshots.shift();
  }
}

/** Call latency bounds in ms, and the deadline after which a call with no answer fails. */
const LATENCY = { min: 1, max: 4 };
const CALL_TIMEOUT_MS = 300;

/** One node's etcd client: the EtcdPort on the model, for one incarnation of that node. */
export class SimEtcdClient implements EtcdPort {
  constructor(
    private readonly s: Scheduler,
    private readonly model: EtcdModel,
    private readonly node: string,
    private readonly owner: Owner,
    private readonly writer: Writer,
    /** a single-member client (keepalives): only that member answers */
    private readonly member?: number,
  ) {}

  txn(txn: EtcdTxn): Promise<EtcdTxnResult> {
    return this.#call(() => this.model.txn(txn, this.writer));
  }

  get(key: string): Promise<EtcdKv | undefined> {
    return this.#call(() => this.model.get(key));
  }

  getPrefix(prefix: string): Promise<EtcdKv[]> {
    return this.#call(() => this.model.getPrefix(prefix));
  }

  leaseGrant(ttlS: number): Promise<{ id: string; ttlS: number }> {
    return this.#call(() => this.model.grant(ttlS));
  }

  async leaseKeepAliveOnce(id: string, timeoutMs: number): Promise<KeepaliveAnswer> {
    try {
      return await this.#call(() => this.model.keepalive(id), timeoutMs);
    } catch {
      return 'failed';
    }
  }

  leaseRevoke(id: string): Promise<void> {
    return this.#call(() => this.model.revoke(id));
  }

  watch(target: { key: string } | { prefix: string }, handlers: EtcdWatchHandlers): EtcdWatch {
    return this.model.watch(this.node, this.owner, target, handlers);
  }

  /**
   * One call: it reaches etcd after a latency and is applied there (as an event of the world,
   * so it is applied even if the node crashes meanwhile); the answer comes back after another
   * latency as an event of the node. Unreachable: it fails after the deadline. A faulty call is
   * applied or not, and its answer is lost: the caller sees a failure either way.
   */
  #call<T>(apply: () => T, timeoutMs = CALL_TIMEOUT_MS): Promise<T> {
    const { s, model, owner } = this;
    return new Promise<T>((resolve, reject) => {
      const fail = (why: string) => s.at(timeoutMs, () => reject(new Error(`etcd: ${why}`)), owner);
      if (!model.reachable(this.node, this.member)) {
        fail('unavailable');
        return;
      }
      const faulty = s.rng.chance(model.callFaultRate);
      s.at(s.between(LATENCY.min, LATENCY.max), () => {
        if (!model.reachable(this.node, this.member)) {
          fail('unavailable');
          return;
        }
        let result: { ok: true; value: T } | { ok: false; err: unknown };
        if (faulty && s.rng.chance(0.5)) {
          fail('request lost before it was applied');
          return;
        }
        try {
          result = { ok: true, value: apply() };
        } catch (err) {
          result = { ok: false, err };
        }
        if (faulty) {
          fail('reply lost after the request was applied');
          return;
        }
        s.at(
          s.between(LATENCY.min, LATENCY.max),
          () => (result.ok ? resolve(result.value) : reject(result.err)),
          owner,
        );
      });
    });
  }
}
