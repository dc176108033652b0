/**
 * The validator dialer: keeps one privval connection to one CometBFT node open, forever.
 *
 * The node listens and the KMS dials (spec §1.1). A node that starts while no signer is connected
 * fails after about 3 s, so the dialer re-dials without end and quickly: exponential back-off
 * from `initialMs` capped at `maxMs` (≤ 1 s), reset after every established connection.
 * tcp connections are wrapped in SecretConnection with the KMS's persistent identity; unix
 * sockets carry raw privval frames. Each established connection is served by {@link runSession}.
 *
 * Logging is by state change, never per retry: one line per connect and per disconnect, one line
 * when dialing starts to fail, then a summary at most every 60 s while it keeps failing.
 *
 * A node accepts one signer connection at a time, so a KMS node that holds it but can serve
 * nothing (a cluster node cut from etcd and from the leader) would keep that validator from
 * signing for as long as it is cut off: {@link ValidatorDialer.yieldLink} lets the connection go
 * and stays away for a while, and the node takes the next signer that dials it.
 */

import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type pino from 'pino';
import type { ProtocolVersion } from '../cometbft/types.ts';
import type { StageObserver } from '../stages.ts';
import { formatPrivvalAddress, type PrivvalAddress, parsePrivvalAddress } from './address.ts';
import type { RequestHandler } from './handler.ts';
import { nodeIdFromPubKey, type TransportIdentity } from './identity.ts';
import { secretHandshake } from './secret-connection.ts';
import { refuseSelfConnection } from './self-connection.ts';
import { DEFAULT_IDLE_TIMEOUT_MS, runSession, type SessionEnd } from './session.ts';

/** Options of {@link ValidatorDialer}. */
export interface DialerOptions {
  /** `tcp://host:port`, `host:port` or `unix:///path` of the node's `priv_validator_laddr`. */
  addr: string;
  version: ProtocolVersion;
  /** The KMS's SecretConnection identity (tcp only). */
  identity: TransportIdentity;
  handler: RequestHandler;
  logger: pino.Logger;
  /** Bound on TCP connect plus SecretConnection handshake. Default 5000 (the node's own deadline). */
  handshakeTimeoutMs?: number;
  /** Silence after which a connection is dead. Default 10000. */
  idleTimeoutMs?: number;
  /** Re-dial back-off. Default { initialMs: 50, maxMs: 1000 }. */
  backoff?: { initialMs: number; maxMs: number };
  /** receives the transport's stage times of signing requests (src/stages.ts) */
  stages?: StageObserver;
}

/** A snapshot of the dialer, for the admin API. */
export interface DialerStatus {
  addr: string;
  /** True only while a transport handshake has completed and the session runs. */
  connected: boolean;
  /** Connections established so far. */
  connects: number;
  lastError?: string;
  /** SecretConnection node id of the connected node (tcp only). */
  remoteNodeId?: string;
}

/** Events of {@link ValidatorDialer}, for metrics. */
export interface DialerEvents {
  connect: [info: { addr: string; remoteNodeId?: string }];
  disconnect: [info: { addr: string; reason: SessionEnd['reason']; requests: number; error?: Error }];
}

/** Interval of the "still failing" summary while dialing keeps failing. */
const FAILURE_SUMMARY_INTERVAL_MS = 60_000;

/** Dials one validator endpoint, serves it, and re-dials forever until {@link stop}. */
export class ValidatorDialer extends EventEmitter<DialerEvents> {
  private readonly target: PrivvalAddress;
  private readonly addr: string;
  private readonly handshakeTimeoutMs: number;
  private readonly idleTimeoutMs: number;
  private readonly backoff: { initialMs: number; maxMs: number };
  private readonly log: pino.Logger;

  private running = false;
  private loop: Promise<void> | undefined;
  /** The socket and the stream over it while dialing or connected; destroyed by stop(). */
  private socket: net.Socket | undefined;
  private stream: Duplex | undefined;
  private wakeSleep: (() => void) | undefined;
  private isConnected = false;
  private connects = 0;
  private lastError: string | undefined;
  private remoteNodeId: string | undefined;
  /** Failed dials since the last success, and when the last failure line was logged. */
  private failures = 0;
  private lastFailureLogAt = 0;
  /** set by yieldLink: why the connection is being let go, and no re-dial before `until` (ms) */
  private yielding: { why: string; until: number } | undefined;

  constructor(private readonly opts: DialerOptions) {
    super();
    this.target = parsePrivvalAddress(opts.addr);
    if (this.target.proto === 'tcp' && this.target.port === 0) {
      throw new Error(`invalid validator address "${opts.addr}": port 0 cannot be dialed`);
    }
    this.addr = formatPrivvalAddress(this.target);
    this.handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 5000;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.backoff = opts.backoff ?? { initialMs: 50, maxMs: 1000 };
    this.log = opts.logger.child({ validator: this.addr });
  }

  /** True only once the transport handshake completed, until the connection ends. */
  get connected(): boolean {
    return this.isConnected;
  }

  get status(): DialerStatus {
    const s: DialerStatus = { addr: this.addr, connected: this.isConnected, connects: this.connects };
    if (this.lastError !== undefined) s.lastError = this.lastError;
    if (this.remoteNodeId !== undefined) s.remoteNodeId = this.remoteNodeId;
    return s;
  }

  /** Starts dialing in the background. Idempotent. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /**
   * Stops re-dialing, closes the connection and resolves once the loop has exited: the
   * in-flight request (if any) has settled, and no socket or timer of this dialer remains.
   */
  async stop(): Promise<void> {
    this.running = false;
    this.wakeSleep?.();
    this.stream?.destroy();
    this.socket?.destroy();
    await this.loop;
    this.loop = undefined;
  }

  /**
   * Lets the current connection go (the request in flight, if any, is not answered: the node
   * re-sends it to the next signer) and re-dials no sooner than `holdOffMs` from now, so that
   * another signer waiting on the node gets the connection. Does nothing while not connected.
   */
  yieldLink(holdOffMs: number, why: string): void {
    if (!this.isConnected || !this.running) return;
    this.yielding = { why, until: performance.now() + holdOffMs };
    this.stream?.destroy();
    this.socket?.destroy();
  }

  private async run(): Promise<void> {
    let delay = this.backoff.initialMs;
    while (this.running) {
      const established = await this.connectAndServe();
      if (!this.running) break;
      if (established) delay = this.backoff.initialMs;
      const holdOff = this.yielding === undefined ? 0 : this.yielding.until - performance.now();
      this.yielding = undefined;
      await this.sleep(Math.max(delay, holdOff));
      if (!established) delay = Math.min(delay * 2, this.backoff.maxMs);
    }
  }

  /** One dial: connect, handshake, serve until the connection ends. True if it got established. */
  private async connectAndServe(): Promise<boolean> {
    let stream: Duplex;
    try {
      stream = await this.dial();
    } catch (err) {
      this.socket?.destroy();
      this.socket = undefined;
      if (this.running) this.noteFailure(err instanceof Error ? err : new Error(String(err)));
      return false;
    }
    this.stream = stream;
    this.isConnected = true;
    this.connects++;
    this.lastError = undefined;
    this.log.info(
      { remoteNodeId: this.remoteNodeId, failedDials: this.failures || undefined },
      'connected to validator',
    );
    this.failures = 0;
    this.emit(
      'connect',
      this.remoteNodeId ? { addr: this.addr, remoteNodeId: this.remoteNodeId } : { addr: this.addr },
    );

    const end = await runSession(stream, {
      version: this.opts.version,
      handler: this.opts.handler,
      context:
        this.remoteNodeId === undefined
          ? { endpoint: this.addr }
          : { endpoint: this.addr, remoteNodeId: this.remoteNodeId },
      idleTimeoutMs: this.idleTimeoutMs,
      logger: this.log,
      ...(this.opts.stages === undefined ? {} : { stages: this.opts.stages }),
    });
    this.isConnected = false;
    this.stream = undefined;
    this.socket?.destroy();
    this.socket = undefined;
    if (end.error) this.lastError = end.error.message;
    const stopping = !this.running;
    if (this.yielding !== undefined && !stopping) {
      this.log.warn(
        { reason: 'yielded', why: this.yielding.why, requests: end.requests },
        'let the validator connection go, for a signer that can serve it',
      );
    } else {
      this.log[stopping ? 'info' : 'warn'](
        { reason: stopping ? 'stopped' : end.reason, err: end.error, requests: end.requests },
        'disconnected from validator',
      );
    }
    this.emit('disconnect', {
      addr: this.addr,
      reason: end.reason,
      requests: end.requests,
      ...(end.error ? { error: end.error } : {}),
    });
    return true;
  }

  /** Connects and, for tcp, runs the SecretConnection handshake; bounded by handshakeTimeoutMs. */
  private async dial(): Promise<Duplex> {
    const socket =
      this.target.proto === 'tcp'
        ? net.connect({ host: this.target.host, port: this.target.port, noDelay: true })
        : net.connect({ path: this.target.path });
    this.socket = socket;
    // Keep an 'error' listener for the socket's whole life: an unhandled 'error' event would
    // crash the process. Errors surface through the connect wait, the handshake or the session.
    socket.on('error', () => {});
    const deadline = Date.now() + this.handshakeTimeoutMs;
    await waitConnected(socket, this.handshakeTimeoutMs);
    if (this.target.proto === 'unix') {
      this.remoteNodeId = undefined;
      return socket;
    }
    refuseSelfConnection(socket);
    const remaining = Math.max(1, deadline - Date.now());
    // stop() destroys the socket; the race makes that end a pending handshake at once.
    const conn = await Promise.race([
      secretHandshake(socket, this.opts.identity.seed, {
        timeoutMs: remaining,
        ...(this.opts.stages === undefined ? {} : { stages: this.opts.stages }),
      }),
      rejectOnClose(socket),
    ]);
    this.remoteNodeId = nodeIdFromPubKey(conn.remotePubKey);
    return conn;
  }

  private noteFailure(err: Error): void {
    this.failures++;
    this.lastError = err.message;
    this.remoteNodeId = undefined;
    const now = Date.now();
    if (this.failures === 1) {
      this.lastFailureLogAt = now;
      this.log.warn({ err: err.message }, 'cannot connect to validator; retrying');
    } else if (now - this.lastFailureLogAt >= FAILURE_SUMMARY_INTERVAL_MS) {
      this.lastFailureLogAt = now;
      this.log.warn(
        { err: err.message, failedDials: this.failures },
        'still cannot connect to validator; retrying',
      );
    }
  }

  /** Sleeps for `ms`, or less if stop() is called. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wakeSleep = () => {
        this.wakeSleep = undefined;
        done();
      };
    });
  }
}

/** Resolves once `socket` is connected; rejects on error, close or timeout. Cleans up after itself. */
function waitConnected(socket: net.Socket, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => settle(new Error(`connect timed out after ${timeoutMs} ms`)), timeoutMs);
    const onConnect = (): void => settle();
    const onError = (err: Error): void => settle(err);
    const onClose = (): void => settle(new Error('connection closed before it was established'));
    function settle(err?: Error): void {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('error', onError);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve();
    }
    socket.once('connect', onConnect);
    socket.once('error', onError);
    socket.once('close', onClose);
  });
}

/** Rejects when `socket` closes; never resolves. For racing a handshake against stop(). */
function rejectOnClose(socket: net.Socket): Promise<never> {
  return new Promise((_resolve, reject) => {
    if (socket.destroyed) reject(new Error('connection closed during the handshake'));
    else socket.once('close', () => reject(new Error('connection closed during the handshake')));
  });
}
