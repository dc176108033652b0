/**
 * Group commit of fenced state writes (issue 13): while one etcd transaction is in flight, the
 * writes of other chains wait and then go to etcd together in the next one, so that many chains
 * cost one quorum round trip (and one etcd fsync) per transaction instead of one each.
 *
 * A batched transaction is the conjunction of what each write would have checked alone:
 *
 *   compare: the leader key still carries the fencing token (value, create revision, lease)
 *            AND, for each chain in the batch, its state key still has the expected mod revision
 *   success: put each chain's new state
 *   failure: read the leader key and each chain's state key (at the revision the compares saw)
 *
 * So a write commits only together with every compare it would have had alone, and a batch
 * never contains two writes of one chain (the second waits for the next transaction), so no
 * write is ever compared against a revision another write of the same transaction changes.
 *
 * When a batched transaction fails, its failure branch says why, per chain, at the very revision
 * the compares were evaluated: the leader key no longer matching fails every write (leadership
 * lost); otherwise each chain whose state key's mod revision differs from its expected one is
 * answered "conflict" with the key as read, and the others, whose compares held, are retried in
 * a transaction of their own (without newcomers), which again answers at least one of them or
 * commits them all; a failure that names no culprit fails every write of that transaction with
 * an error (unknown outcome, the guard tells its node to try again). Every write submitted gets
 * exactly one answer; none is dropped or answered with another chain's result.
 */
import type { EtcdCompare, EtcdKv, EtcdPort, EtcdTxnResult } from '../ports/etcd.ts';
import { StateStoreError } from './errors.ts';

/** The fencing compares of one term (see `fencingCompares` in etcd.ts). */
export interface BatchFence {
  leaderKey: string;
  /** the compares that hold only while the term that wrote the leader key still leads */
  compares: EtcdCompare[];
  /** identifies the term: writes of different terms never share a transaction */
  id: string;
  /** whether the leader key as read in a failure branch still belongs to this term */
  matches(leader: EtcdKv | undefined): boolean;
}

/** One fenced write of one chain's state key. */
export interface BatchWrite {
  chainId: string;
  stateKey: string;
  /** the state key's mod revision this write expects (it is compared in the transaction) */
  modRevision: string;
  value: Buffer;
  fence: BatchFence;
  /** what the write is, for the call's observation: a reservation, or a signature record */
  op: 'reserve' | 'record';
}

/** What became of one write. A transaction that threw rejects the write's promise instead. */
export type BatchOutcome =
  /** committed by a quorum at `revision` (the state key's new mod revision) */
  | { kind: 'committed'; revision: string }
  /** this chain's state key had changed: nothing was written; `current` is the key as read */
  | { kind: 'conflict'; current: EtcdKv | undefined }
  /** the leader key no longer carries this write's fencing token: nothing was written */
  | { kind: 'not_leader' };

/**
 * Protections the deterministic simulator can switch off (`npm run sim -- --plant-bug NAME`);
 * nothing in the product sets them.
 */
export interface BatchPlantedBugs {
  /** writes carry no state compare (only the fence) */
  noStateCompare?: boolean;
  /** a batch carries only its first chain's state compare: the others ride on that one's result */
  oneStateCompare?: boolean;
}

export interface EtcdWriteBatcherOptions {
  client: EtcdPort;
  /**
   * runs each transaction (the store wraps it to report the call to its observer); `op` is
   * 'reserve' when the transaction carries a reservation, else 'record'
   */
  run?: (op: BatchWrite['op'], txn: () => Promise<EtcdTxnResult>) => Promise<EtcdTxnResult>;
  /** most writes in one transaction (etcd refuses more than 128 operations in a branch) */
  maxWrites?: number;
  /** most bytes of values in one transaction (etcd's default request limit is 1.5 MiB) */
  maxBytes?: number;
  plantedBugs?: BatchPlantedBugs;
}

const DEFAULT_MAX_WRITES = 64;
const DEFAULT_MAX_BYTES = 512 * 1024;

interface Pending {
  write: BatchWrite;
  resolve(outcome: BatchOutcome): void;
  reject(err: unknown): void;
}

/**
 * Sends fenced state writes to etcd, at most one transaction at a time, grouping the writes that
 * wait into the next transaction (see the file comment). Writes of one chain go out in the order
 * they were submitted, one per transaction.
 */
export class EtcdWriteBatcher {
  readonly #client: EtcdPort;
  readonly #run: (op: BatchWrite['op'], txn: () => Promise<EtcdTxnResult>) => Promise<EtcdTxnResult>;
  readonly #maxWrites: number;
  readonly #maxBytes: number;
  readonly #bugs: BatchPlantedBugs;
  /** writes waiting for a transaction, in submission order */
  #queue: Pending[] = [];
  #busy = false;
  /** transactions sent so far (for tests and the bench: how well writes were grouped) */
  transactions = 0;

  constructor(opts: EtcdWriteBatcherOptions) {
    this.#client = opts.client;
    this.#run = opts.run ?? ((_op, txn) => txn());
    this.#maxWrites = opts.maxWrites ?? DEFAULT_MAX_WRITES;
    this.#maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
    this.#bugs = opts.plantedBugs ?? {};
  }

  /** Queues `write`; resolves with its outcome, or rejects when its transaction's outcome is unknown. */
  submit(write: BatchWrite): Promise<BatchOutcome> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ write, resolve, reject });
      if (!this.#busy) {
        this.#busy = true;
        // After the current turn: writes submitted in the same turn share the first transaction.
        queueMicrotask(() => void this.#drain());
      }
    });
  }

  /** Sends transactions until the queue is empty; the only place that clears `#busy`. */
  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        let batch = this.#take();
        while (batch.length > 0) batch = await this.#send(batch);
      }
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Removes the next batch from the queue: writes of the first write's term, at most one per
   * chain, within the limits; the rest keep their places.
   */
  #take(): Pending[] {
    const fence = (this.#queue[0] as Pending).write.fence;
    const batch: Pending[] = [];
    const chains = new Set<string>();
    const rest: Pending[] = [];
    let bytes = 0;
    for (const p of this.#queue) {
      const { write } = p;
      const fits =
        batch.length === 0 ||
        (batch.length < this.#maxWrites && bytes + write.value.length <= this.#maxBytes);
      if (write.fence.id === fence.id && !chains.has(write.stateKey) && fits) {
        batch.push(p);
        chains.add(write.stateKey);
        bytes += write.value.length;
      } else {
        rest.push(p);
      }
    }
    this.#queue = rest;
    return batch;
  }

  /**
   * One transaction for `batch`; answers every write it can and returns the writes to retry in a
   * transaction of their own (empty when all are answered).
   */
  async #send(batch: Pending[]): Promise<Pending[]> {
    const fence = (batch[0] as Pending).write.fence;
    const compare: EtcdCompare[] = [...fence.compares];
    batch.forEach((p, i) => {
      if (this.#bugs.noStateCompare || (this.#bugs.oneStateCompare && i > 0)) return;
      compare.push({ key: p.write.stateKey, target: 'mod', revision: p.write.modRevision });
    });
    let res: EtcdTxnResult;
    try {
      this.transactions++;
      const op = batch.some((p) => p.write.op === 'reserve') ? 'reserve' : 'record';
      res = await this.#run(op, () =>
        this.#client.txn({
          compare,
          success: batch.map((p) => ({ op: 'put' as const, key: p.write.stateKey, value: p.write.value })),
          failure: [
            { op: 'range', key: fence.leaderKey },
            ...batch.map((p) => ({ op: 'range' as const, key: p.write.stateKey })),
          ],
        }),
      );
    } catch (err) {
      // Unknown whether it was applied: each writer finds out from its next compare.
      for (const p of batch) p.reject(err);
      return [];
    }
    if (res.succeeded) {
      for (const p of batch) p.resolve({ kind: 'committed', revision: res.revision });
      return [];
    }
    return this.#failed(batch, fence, res);
  }

  /** Answers the writes of a failed transaction from its failure branch (see the file comment). */
  #failed(batch: Pending[], fence: BatchFence, res: EtcdTxnResult): Pending[] {
    if (res.ranges.length !== batch.length + 1) {
      const err = new StateStoreError(
        `etcd answered a failed transaction with ${res.ranges.length} reads, expected ${batch.length + 1}`,
      );
      for (const p of batch) p.reject(err);
      return [];
    }
    if (!fence.matches(res.ranges[0])) {
      for (const p of batch) p.resolve({ kind: 'not_leader' });
      return [];
    }
    const innocent: Pending[] = [];
    batch.forEach((p, i) => {
      const current = res.ranges[i + 1];
      if (current !== undefined && current.modRevision === p.write.modRevision) innocent.push(p);
      else p.resolve({ kind: 'conflict', current });
    });
    if (innocent.length < batch.length) return innocent;
    // Every compare we can check held, yet the transaction failed: no write can be answered
    // with certainty, so none is retried blindly.
    const err = new StateStoreError('etcd failed a fenced transaction whose compares all held as read');
    for (const p of innocent) p.reject(err);
    return [];
  }
}
