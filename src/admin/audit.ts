/**
 * The audit log: one JSON line per guard decision, in a file of its own, so that the signatures
 * of every node can be checked afterwards (`cometkms audit check`). It is evidence, not
 * protection — the state store is what prevents a double sign — so it must never slow down or
 * stop the signing path: `record` only serialises and buffers; a background flush appends the
 * buffered lines in one write and fsyncs them, in batches.
 */
import { type FileHandle, open, rename, stat } from 'node:fs/promises';
import pino from 'pino';
import type { GuardDecision } from '../guard/decision.ts';

/** One line of the audit log (the format `audit check` reads). */
export interface AuditRecord {
  /** ISO time of the decision */
  ts: string;
  node: string;
  chain: string;
  kind: GuardDecision['kind'];
  /** SignedMsgType (1 prevote, 2 precommit, 32 proposal), when the request carried one */
  type?: number;
  /** decimal string: int64 heights do not fit a JSON number */
  height?: string;
  round?: number;
  /** 1 propose, 2 prevote, 3 precommit */
  step?: number;
  outcome: GuardDecision['outcome'];
  reason?: string;
  /** hex SHA-256 of the request's sign bytes */
  sign_bytes_sha256?: string;
  latency_ms: number;
  hsm_ms?: number;
}

/** The line written when records had to be dropped, so a gap in the log is never silent. */
export interface AuditDroppedRecord {
  ts: string;
  node: string;
  event: 'dropped';
  count: number;
}

/** Options of {@link AuditLog.open}. */
export interface AuditLogOptions {
  /** the log file; rotated files are `path.1` (newest) … `path.keep` */
  path: string;
  nodeId: string;
  /** rotate once the file would grow past this many bytes; default 64 MiB */
  maxBytes?: number;
  /** rotated files kept; default 10 */
  keep?: number;
  /** buffered lines are written and fsynced at least this often; default 200 ms */
  flushIntervalMs?: number;
  /** a flush starts at once when this many lines are buffered; default 256 */
  flushLines?: number;
  /** lines buffered beyond this are dropped (and counted); default 65 536 */
  maxPendingLines?: number;
  /** warnings (dropped records, write failures) go here; default: silent */
  logger?: pino.Logger;
  /** clock of the `ts` field; default Date.now */
  now?: () => number;
}

/** Counters of an {@link AuditLog}. */
export interface AuditLogStats {
  /** lines made durable (written and fsynced) */
  written: number;
  /** fsync calls, one per batch */
  fsyncs: number;
  /** records dropped because the buffer was full or the log closed */
  dropped: number;
  /** rotations done */
  rotations: number;
}

/** Serialises a decision as one audit line (without the newline). */
export function auditLine(nodeId: string, d: GuardDecision, ts: number): string {
  const r: AuditRecord = {
    ts: new Date(ts).toISOString(),
    node: nodeId,
    chain: d.chainId,
    kind: d.kind,
    outcome: d.outcome,
    latency_ms: roundMs(d.latencyMs),
  };
  if (d.type !== undefined) r.type = d.type;
  if (d.height !== undefined) r.height = d.height.toString();
  if (d.round !== undefined) r.round = d.round;
  if (d.step !== undefined) r.step = d.step;
  if (d.reason !== undefined) r.reason = d.reason;
  if (d.signBytesSha256 !== undefined) r.sign_bytes_sha256 = d.signBytesSha256;
  if (d.hsmMs !== undefined) r.hsm_ms = roundMs(d.hsmMs);
  // Fixed key order (ts, node, chain, kind, type, height, ...) keeps the file easy to read.
  return JSON.stringify(r, AUDIT_KEY_ORDER);
}

const AUDIT_KEY_ORDER = [
  'ts',
  'node',
  'chain',
  'kind',
  'type',
  'height',
  'round',
  'step',
  'outcome',
  'reason',
  'sign_bytes_sha256',
  'latency_ms',
  'hsm_ms',
];

const roundMs = (ms: number): number => Math.round(ms * 1000) / 1000;

const MiB = 1024 * 1024;

/**
 * An append-only, size-rotated JSON-lines audit file. Not safe to share one path between two
 * instances (or processes): each node writes its own file.
 */
export class AuditLog {
  private readonly path: string;
  private readonly nodeId: string;
  private readonly maxBytes: number;
  private readonly keep: number;
  private readonly flushIntervalMs: number;
  private readonly flushLines: number;
  private readonly maxPendingLines: number;
  private readonly log: pino.Logger;
  private readonly now: () => number;

  private file: FileHandle;
  /** bytes in the current file */
  private size: number;
  /** decisions not written yet, with their time; serialised by the flush, off the signing path */
  private pending: Array<{ d: GuardDecision; ts: number }> = [];
  /** records dropped since the last dropped-marker line was queued */
  private droppedSinceMarker = 0;
  /** the flush in progress, if any: at most one at a time, so lines stay in order */
  private flushing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** a flush has been asked for on the next turn of the event loop */
  private immediate: NodeJS.Immediate | undefined;
  private closed = false;
  /** the last write failed: retry at the interval pace, not in a tight loop, and warn once */
  private failing = false;
  private readonly counters: AuditLogStats = { written: 0, fsyncs: 0, dropped: 0, rotations: 0 };

  private constructor(options: AuditLogOptions, file: FileHandle, size: number) {
    this.path = options.path;
    this.nodeId = options.nodeId;
    this.maxBytes = options.maxBytes ?? 64 * MiB;
    this.keep = options.keep ?? 10;
    this.flushIntervalMs = options.flushIntervalMs ?? 200;
    this.flushLines = options.flushLines ?? 256;
    this.maxPendingLines = options.maxPendingLines ?? 65_536;
    this.log = options.logger ?? pino({ level: 'silent' });
    this.now = options.now ?? Date.now;
    this.file = file;
    this.size = size;
  }

  /** Opens (appending to) or creates the log file. */
  static async open(options: AuditLogOptions): Promise<AuditLog> {
    const keep = options.keep ?? 10;
    if (!Number.isInteger(keep) || keep < 1) throw new Error(`audit log: keep must be ≥ 1, got ${keep}`);
    const file = await open(options.path, 'a', 0o640);
    try {
      const size = (await file.stat()).size;
      return new AuditLog(options, file, size);
    } catch (err) {
      await file.close();
      throw err;
    }
  }

  /** A copy of the counters. */
  stats(): AuditLogStats {
    return { ...this.counters };
  }

  /**
   * Queues one decision. Synchronous and I/O-free: safe to call on the signing path. When the
   * buffer is full (the disk is stuck or too slow) the record is dropped and counted, and a
   * `dropped` line records the gap once the disk is back.
   */
  record(d: GuardDecision): void {
    if (this.closed || this.pending.length >= this.maxPendingLines) {
      this.drop();
      return;
    }
    this.pending.push({ d, ts: this.now() });
    this.schedule();
  }

  /** Writes and fsyncs everything buffered so far. */
  async flush(): Promise<void> {
    // Wait out a flush in progress (its failure is its starter's to report), then flush what is
    // left: lines may have been queued after it took its batch.
    while (this.flushing !== undefined) await this.flushing.catch(() => undefined);
    if (this.pending.length === 0 && this.droppedSinceMarker === 0) return;
    this.cancelSchedule();
    this.flushing = this.writeBatch().finally(() => {
      this.flushing = undefined;
      // Records that arrived meanwhile were not scheduled (see schedule()): do it now.
      if (!this.closed && (this.pending.length > 0 || this.droppedSinceMarker > 0)) this.schedule();
    });
    await this.flushing;
  }

  /** Flushes, fsyncs and closes the file. Later records are dropped. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cancelSchedule();
    try {
      await this.flush();
    } finally {
      await this.file.close();
    }
  }

  private drop(): void {
    if (this.droppedSinceMarker === 0 && !this.closed) {
      this.log.warn({ path: this.path }, 'audit log buffer full: dropping records until the disk catches up');
    }
    this.droppedSinceMarker++;
    this.counters.dropped++;
  }

  /** Arranges the next flush: at once for a full batch, else after the interval. */
  private schedule(): void {
    if (this.flushing !== undefined) return; // the running flush re-schedules when it ends
    if (this.pending.length >= this.flushLines && !this.failing) {
      if (this.timer !== undefined) clearTimeout(this.timer);
      this.timer = undefined;
      // Not synchronously: record() must return before any I/O is even set up.
      this.immediate ??= setImmediate(() => {
        this.immediate = undefined;
        this.backgroundFlush();
      });
    } else if (this.timer === undefined && this.immediate === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.backgroundFlush();
      }, this.flushIntervalMs);
      // The owner calls close() on shutdown; a pending timer alone must not keep a process alive.
      this.timer.unref();
    }
  }

  private cancelSchedule(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.immediate !== undefined) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
  }

  private backgroundFlush(): void {
    // A failure is logged by writeBatch and the batch re-queued; flush() re-schedules it.
    this.flush().catch(() => undefined);
  }

  /** Takes the buffered records, appends their lines in one write, fsyncs, rotates when due. */
  private async writeBatch(): Promise<void> {
    const records = this.pending;
    this.pending = [];
    const lines = records.map((r) => auditLine(this.nodeId, r.d, r.ts));
    const dropped = this.droppedSinceMarker;
    this.droppedSinceMarker = 0;
    if (dropped > 0) {
      const marker: AuditDroppedRecord = {
        ts: new Date(this.now()).toISOString(),
        node: this.nodeId,
        event: 'dropped',
        count: dropped,
      };
      lines.push(JSON.stringify(marker));
    }
    const data = Buffer.from(`${lines.join('\n')}\n`);
    try {
      if (this.size > 0 && this.size + data.length > this.maxBytes) await this.rotate();
      await this.append(data);
    } catch (err) {
      // Nothing of the batch is in the file: put it back in front (the marker is re-counted),
      // within the bound; what does not fit is dropped and counted.
      const room = Math.max(0, this.maxPendingLines - this.pending.length);
      const kept = records.slice(records.length - Math.min(room, records.length));
      const lost = records.length - kept.length;
      this.pending = [...kept, ...this.pending];
      this.droppedSinceMarker += dropped + lost;
      this.counters.dropped += lost;
      if (!this.failing) {
        this.log.warn({ err, path: this.path }, 'audit log write failed; retrying every flush interval');
      }
      this.failing = true;
      throw err;
    }
    if (this.failing) this.log.warn({ path: this.path }, 'audit log writable again');
    this.failing = false;
    this.size += data.length;
    this.counters.written += lines.length;
    // A failed fsync is reported but the lines are not re-queued: they are in the file already.
    await this.file.sync();
    this.counters.fsyncs++;
  }

  /** Appends `data` whole, or leaves the file as it was. */
  private async append(data: Buffer): Promise<void> {
    try {
      await this.file.write(data);
    } catch (err) {
      // Cut a partial write off again, so the file never holds half a line followed by the
      // retried batch (which `audit check` would report as malformed).
      await this.file.truncate(this.size).catch(() => undefined);
      throw err;
    }
  }

  /**
   * path.(keep-1) → path.keep, …, path → path.1, then a fresh path. The old file stays open until
   * the new one is, so a failure anywhere leaves a usable file handle.
   */
  private async rotate(): Promise<void> {
    for (let i = this.keep - 1; i >= 1; i--) {
      const from = `${this.path}.${i}`;
      if (await exists(from)) await rename(from, `${this.path}.${i + 1}`);
    }
    await rename(this.path, `${this.path}.1`);
    const old = this.file;
    this.file = await open(this.path, 'a', 0o640);
    this.size = 0;
    this.counters.rotations++;
    await old.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
