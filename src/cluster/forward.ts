/**
 * Forwarding between cluster nodes (ARCHITECTURE.md §4): a follower that receives a signing
 * request sends it to the leader over mutually authenticated TLS and relays the answer.
 *
 * Wire format (one TLS connection carries many requests, matched by id):
 *   frame   = u32be payload length ‖ payload
 *   request = u8 1 ‖ u32be id ‖ u8 chain id length ‖ chain id (UTF-8) ‖ privval Message body
 *   reply   = u8 2 ‖ u32be id ‖ u8 status ‖ privval Message body (status "ok" only)
 * The body is the privval `Message` encoded for the chain's protocol version, exactly as the
 * validator node sent it; the leader decodes it again and its guard runs every check, so a
 * forwarded request is never trusted more than one read from a validator connection.
 *
 * Sizes are bounded before anything is buffered (a length prefix over the limit closes the
 * connection), and every forwarded request has a deadline shorter than the node's 5 s read
 * timeout, so the follower can still answer "try again" in time.
 */
import { connect, isIP, type Socket } from 'node:net';
import tls from 'node:tls';
import type { PeerAddress, PeerMark, PeerMarks, PeerPort } from '../ports/peers.ts';
import { refuseSelfConnection } from '../privval/self-connection.ts';
import { DEFAULT_MAX_REQUEST_SIZE } from '../privval/session.ts';
import {
  CONTROL_CHAIN_ID,
  ControlKind,
  type ControlRequest,
  decodeMarksAnswer,
  encodeControlRequest,
  HEARTBEAT_ANSWER,
  RAISE_ACCEPTED,
} from './peer-wire.ts';

/** The PEM material of one node: the cluster CA, and this node's certificate and key. */
export interface ForwardTls {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** What the leader answers to one forwarded request. */
export type ForwardOutcome =
  | { status: 'ok'; body: Uint8Array }
  /** this node is not the leader ready to sign (or no longer is) */
  | { status: 'not_leader' }
  | { status: 'unknown_chain' }
  /** the body is not a request the leader accepts for forwarding */
  | { status: 'bad_request' }
  /** too many requests in flight on this connection */
  | { status: 'overloaded' }
  /** the leader failed to produce a reply */
  | { status: 'failed' };

/** What a follower gets for one forwarded request: the leader's outcome or a local failure. */
export type ForwardResult =
  | ForwardOutcome
  | { status: 'no_leader' | 'unavailable' | 'timeout' | 'leader_changed'; reason: string };

/** Largest forwarded request body: as large as a validator connection accepts. */
export const MAX_FORWARD_REQUEST_BODY = DEFAULT_MAX_REQUEST_SIZE;
/**
 * Largest reply body. Replies are ≤ 10240 bytes on the validator side (the guard drops the echoed
 * vote extension); this leaves room without letting a peer make us buffer much.
 */
export const MAX_FORWARD_REPLY_BODY = 64 * 1024;
/**
 * Largest reply body to a control request (peer-wire.ts): a marks answer of many chains. The peer
 * is an authenticated cluster member; the bound only keeps a broken one from growing a buffer.
 */
export const MAX_CONTROL_REPLY_BODY = 1024 * 1024;
/** Per-request deadline: under the node's 5 s read timeout, leaving time to reply "try again". */
export const DEFAULT_FORWARD_DEADLINE_MS = 2_000;
/** Requests one connection may have in flight at the leader. */
export const DEFAULT_MAX_INFLIGHT = 256;

const TYPE_REQUEST = 1;
const TYPE_REPLY = 2;
const MAX_CHAIN_ID_BYTES = 255;
const REQUEST_OVERHEAD = 1 + 4 + 1 + MAX_CHAIN_ID_BYTES;
const REPLY_OVERHEAD = 1 + 4 + 1;

const STATUS_CODES = {
  ok: 0,
  not_leader: 1,
  unknown_chain: 2,
  bad_request: 3,
  overloaded: 4,
  failed: 5,
} as const satisfies Record<ForwardOutcome['status'], number>;
const STATUS_BY_CODE = new Map(
  (Object.entries(STATUS_CODES) as [ForwardOutcome['status'], number][]).map(([s, c]) => [c, s]),
);

/** The subset of a pino logger this module uses. */
export interface ForwardLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

const silent: ForwardLogger = { info() {}, warn() {} };

/** A malformed frame from a peer: the byte stream cannot be trusted any more. */
class ForwardProtocolError extends Error {}

/**
 * Splits a byte stream into frame payloads. The length is checked against `maxPayload` as soon as
 * the prefix is complete, before the payload is waited for; each byte is copied at most twice.
 */
export class ForwardFrameReader {
  readonly #maxPayload: number;
  #chunks: Buffer[] = [];
  #total = 0;

  constructor(maxPayload: number) {
    this.#maxPayload = maxPayload;
  }

  /** Adds `chunk` and returns every payload it completed. Throws on an oversize length. */
  push(chunk: Buffer): Buffer[] {
    this.#chunks.push(chunk);
    this.#total += chunk.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.#total < 4) break;
      const first = this.#merged();
      const len = first.readUInt32BE(0);
      if (len > this.#maxPayload) {
        throw new ForwardProtocolError(`frame of ${len} bytes exceeds the limit of ${this.#maxPayload}`);
      }
      if (this.#total < 4 + len) break;
      out.push(Buffer.from(first.subarray(4, 4 + len)));
      const rest = first.subarray(4 + len);
      this.#chunks = rest.length > 0 ? [rest] : [];
      this.#total = rest.length;
    }
    return out;
  }

  /** The buffered bytes as one buffer (merging only when a frame header or body needs it). */
  #merged(): Buffer {
    if (this.#chunks.length > 1) this.#chunks = [Buffer.concat(this.#chunks, this.#total)];
    return this.#chunks[0] as Buffer;
  }
}

/** Encodes one forwarded request frame (one allocation: the hot path of every forwarded request). */
export function encodeForwardRequest(id: number, chainId: string, body: Uint8Array): Buffer {
  const chainLen = Buffer.byteLength(chainId, 'utf8');
  if (chainLen > MAX_CHAIN_ID_BYTES) throw new RangeError('chain id too long to forward');
  const payload = 6 + chainLen + body.length;
  const out = Buffer.allocUnsafe(4 + payload);
  out.writeUInt32BE(payload, 0);
  out.writeUInt8(TYPE_REQUEST, 4);
  out.writeUInt32BE(id, 5);
  out.writeUInt8(chainLen, 9);
  out.write(chainId, 10, 'utf8');
  out.set(body, 10 + chainLen);
  return out;
}

/** Encodes one reply frame. */
export function encodeForwardReply(id: number, outcome: ForwardOutcome): Buffer {
  const body = outcome.status === 'ok' ? outcome.body : undefined;
  const payload = REPLY_OVERHEAD + (body?.length ?? 0);
  const out = Buffer.allocUnsafe(4 + payload);
  out.writeUInt32BE(payload, 0);
  out.writeUInt8(TYPE_REPLY, 4);
  out.writeUInt32BE(id, 5);
  out.writeUInt8(STATUS_CODES[outcome.status], 9);
  if (body !== undefined) out.set(body, 4 + REPLY_OVERHEAD);
  return out;
}

function parseRequest(p: Buffer): { id: number; chainId: string; body: Uint8Array } {
  if (p.length < 6 || p.readUInt8(0) !== TYPE_REQUEST) throw new ForwardProtocolError('not a request frame');
  const chainLen = p.readUInt8(5);
  if (p.length < 6 + chainLen) throw new ForwardProtocolError('truncated chain id');
  return {
    id: p.readUInt32BE(1),
    chainId: p.subarray(6, 6 + chainLen).toString('utf8'),
    body: new Uint8Array(p.subarray(6 + chainLen)),
  };
}

function parseReply(p: Buffer): { id: number; outcome: ForwardOutcome } {
  if (p.length < REPLY_OVERHEAD || p.readUInt8(0) !== TYPE_REPLY) {
    throw new ForwardProtocolError('not a reply frame');
  }
  const status = STATUS_BY_CODE.get(p.readUInt8(5));
  if (status === undefined) throw new ForwardProtocolError(`unknown reply status ${p.readUInt8(5)}`);
  const body = p.subarray(REPLY_OVERHEAD);
  if (status !== 'ok' && body.length > 0) throw new ForwardProtocolError(`status ${status} carries a body`);
  const outcome: ForwardOutcome = status === 'ok' ? { status, body: new Uint8Array(body) } : { status };
  return { id: p.readUInt32BE(1), outcome };
}

/** Splits `host:port` (IPv6 in brackets) into its parts. */
export function splitHostPort(addr: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(addr);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new Error(`"${addr}" is not host:port`);
  return { host: (m[1] ?? m[2]) as string, port };
}

/** TLS settings shared by both sides: TLS 1.3 only, the cluster CA as the only trust anchor. */
function baseTls(t: ForwardTls): tls.SecureContextOptions & { minVersion: 'TLSv1.3' } {
  return { ca: t.ca, cert: t.cert, key: t.key, minVersion: 'TLSv1.3' };
}

/** Options of {@link ForwardServer.start}. */
export interface ForwardServerOptions {
  /** `host:port` to listen on (port 0: any free port) */
  listen: string;
  tls: ForwardTls;
  /**
   * answers one forwarded request (the leader side: see `leaderForwardHandler`); `peer` is the
   * CN of the forwarding node's certificate (its node id)
   */
  handle(chainId: string, body: Uint8Array, peer: string): Promise<ForwardOutcome>;
  /**
   * answers a control request (peer-wire.ts: a request with the empty chain id) at once, on every
   * node whatever its role; without it, control requests get "unknown chain" like on a node that
   * predates them
   */
  control?(body: Uint8Array): Promise<ForwardOutcome>;
  maxInflightPerConnection?: number;
  /** bound on the TLS handshake of an incoming connection; default 5000 ms */
  handshakeTimeoutMs?: number;
  logger?: ForwardLogger;
}

/**
 * The leader side: accepts TLS connections only from peers whose certificate chains to the
 * cluster CA (`requestCert` + `rejectUnauthorized`), and answers each request with `handle`.
 */
export class ForwardServer {
  readonly #server: tls.Server;
  readonly #opts: ForwardServerOptions;
  readonly #log: ForwardLogger;
  /**
   * Every accepted TCP connection, from accept on: one still in its TLS handshake when `close`
   * runs is not a TLS socket yet, and would otherwise finish its handshake afterwards, stay open
   * (a follower's heartbeats keep it busy) and hold `close` forever.
   */
  readonly #connections = new Set<Socket>();
  /** the authenticated TLS sockets over them */
  readonly #sockets = new Set<tls.TLSSocket>();
  #closing = false;

  private constructor(opts: ForwardServerOptions) {
    this.#opts = opts;
    this.#log = opts.logger ?? silent;
    this.#server = tls.createServer(
      {
        ...baseTls(opts.tls),
        requestCert: true,
        rejectUnauthorized: true,
        handshakeTimeout: opts.handshakeTimeoutMs ?? 5_000,
      },
      (socket) => this.#onConnection(socket),
    );
    this.#server.on('connection', (raw: Socket) => {
      if (this.#closing) {
        raw.destroy();
        return;
      }
      this.#connections.add(raw);
      raw.on('close', () => this.#connections.delete(raw));
    });
    this.#server.on('tlsClientError', (err, socket) => {
      this.#log.warn(
        { err: err.message, remote: socket.remoteAddress },
        'forward: refused a connection that failed TLS authentication',
      );
    });
  }

  /** Starts listening; resolves once bound. */
  static async start(opts: ForwardServerOptions): Promise<ForwardServer> {
    const s = new ForwardServer(opts);
    const { host, port } = splitHostPort(opts.listen);
    await new Promise<void>((resolve, reject) => {
      s.#server.once('error', reject);
      s.#server.listen(port, host, () => {
        s.#server.off('error', reject);
        resolve();
      });
    });
    return s;
  }

  /** The bound address (with the real port when `listen` asked for port 0). */
  get address(): string {
    const a = this.#server.address();
    if (a === null || typeof a === 'string') throw new Error('forward server is not listening');
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  /** Stops accepting and drops every connection; replies still being computed are discarded. */
  async close(): Promise<void> {
    this.#closing = true;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    for (const c of this.#connections) c.destroy();
    await closed;
  }

  #onConnection(socket: tls.TLSSocket): void {
    // rejectUnauthorized already refused it; checked again because everything below trusts it.
    if (!socket.authorized || this.#closing) {
      socket.destroy();
      return;
    }
    this.#sockets.add(socket);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 5_000);
    const peer = String(socket.getPeerCertificate().subject?.CN ?? 'unknown');
    const reader = new ForwardFrameReader(REQUEST_OVERHEAD + MAX_FORWARD_REQUEST_BODY);
    const maxInflight = this.#opts.maxInflightPerConnection ?? DEFAULT_MAX_INFLIGHT;
    let inflight = 0;
    socket.on('data', (chunk: Buffer) => {
      let requests: ReturnType<typeof parseRequest>[];
      try {
        requests = reader.push(chunk).map(parseRequest);
      } catch (err) {
        this.#log.warn({ peer, err: (err as Error).message }, 'forward: protocol error; closing');
        socket.destroy();
        return;
      }
      for (const req of requests) {
        if (req.chainId === CONTROL_CHAIN_ID) {
          // Answered apart from signing (and outside the in-flight bound: one small answer each):
          // a heartbeat must not wait for etcd or the HSM.
          void this.#control(req.body).then((outcome) => {
            if (!socket.destroyed) socket.write(encodeForwardReply(req.id, outcome));
          });
          continue;
        }
        if (inflight >= maxInflight) {
          socket.write(encodeForwardReply(req.id, { status: 'overloaded' }));
          continue;
        }
        inflight++;
        void this.#serve(req.chainId, req.body, peer).then((outcome) => {
          inflight--;
          if (!socket.destroyed) socket.write(encodeForwardReply(req.id, outcome));
        });
      }
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.#sockets.delete(socket));
  }

  /** The answer to a control request; never rejects (a failure is `failed`). */
  async #control(body: Uint8Array): Promise<ForwardOutcome> {
    const control = this.#opts.control;
    if (control === undefined) return { status: 'unknown_chain' };
    try {
      return await control(body);
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, 'forward: control request failed');
      return { status: 'failed' };
    }
  }

  async #serve(chainId: string, body: Uint8Array, peer: string): Promise<ForwardOutcome> {
    try {
      const outcome = await this.#opts.handle(chainId, body, peer);
      if (outcome.status === 'ok' && outcome.body.length > MAX_FORWARD_REPLY_BODY) {
        this.#log.warn({ chainId, bytes: outcome.body.length }, 'forward: reply too large');
        return { status: 'failed' };
      }
      return outcome;
    } catch (err) {
      this.#log.warn({ chainId, err: (err as Error).message }, 'forward: handler failed');
      return { status: 'failed' };
    }
  }
}

/** Where forwarded requests go: the current leader's id and `forward_advertise`. */
export type ForwardTarget = PeerAddress;

interface Pending {
  resolve(r: ForwardResult): void;
  timer: NodeJS.Timeout;
  /** the largest reply body this request may get */
  maxBody: number;
}

/** How a connection reports its state to its owner (for log lines). */
interface ConnectionReport {
  connected(): void;
  failed(reason: string): void;
}

const QUIET: ConnectionReport = { connected() {}, failed() {} };

/** Connections to peers other than the leader (a new leader's control requests) close after this idle time. */
const PEER_IDLE_MS = 30_000;

/** One TLS connection to one peer (the leader, for forwarding), with its requests in flight. */
class PeerConnection {
  readonly target: ForwardTarget;
  readonly #socket: tls.TLSSocket;
  readonly #pending = new Map<number, Pending>();
  readonly #reader = new ForwardFrameReader(
    REPLY_OVERHEAD + Math.max(MAX_FORWARD_REPLY_BODY, MAX_CONTROL_REPLY_BODY),
  );
  readonly #ready: Promise<boolean>;
  #nextId = 0;
  #closed = false;
  /** the CN of the peer's certificate once connected: its node id (deploy/tls/make-certs.sh) */
  #peerId: string | undefined;
  /** when the last request was sent (for closing idle peer connections) */
  lastUsed = Date.now();

  constructor(target: ForwardTarget, t: ForwardTls, report: ConnectionReport) {
    this.target = target;
    const { host, port } = splitHostPort(target.advertise);
    // A dial to a peer that is down can connect to itself (src/privval/self-connection.ts);
    // checked on the plain socket, the only one that can be reset, before TLS starts on it, so
    // a restarting peer can bind its forward port at once.
    const tcp = connect({ host, port });
    tcp.once('connect', () => {
      try {
        refuseSelfConnection(tcp);
      } catch (err) {
        report.failed((err as Error).message);
      }
    });
    // The server certificate must chain to the cluster CA and name the advertised address
    // (node's default identity check against `host`, an IP SAN for IP addresses).
    this.#socket = tls.connect({
      ...baseTls(t),
      socket: tcp,
      host,
      port,
      ...(isIP(host) === 0 ? { servername: host } : {}),
    });
    this.#socket.setNoDelay(true);
    this.#socket.setKeepAlive(true, 5_000);
    this.#ready = new Promise((resolve) => {
      this.#socket.once('secureConnect', () => {
        const cn = this.#socket.getPeerCertificate().subject?.CN;
        this.#peerId = typeof cn === 'string' ? cn : undefined;
        report.connected();
        resolve(true);
      });
      this.#socket.once('close', () => resolve(false));
    });
    this.#socket.on('data', (chunk: Buffer) => {
      try {
        for (const p of this.#reader.push(chunk)) {
          const { id, outcome } = parseReply(p);
          this.#settle(id, outcome);
        }
      } catch (err) {
        this.fail('unavailable', `protocol error from the peer: ${(err as Error).message}`);
      }
    });
    this.#socket.on('error', (err) => {
      report.failed(err.message);
      this.fail('unavailable', `connection to the peer failed: ${err.message}`);
    });
    this.#socket.on('close', () => this.fail('unavailable', 'connection to the peer closed'));
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The node id the peer's certificate names (undefined before the handshake). */
  get peerId(): string | undefined {
    return this.#peerId;
  }

  /** Sends one request; resolves with the reply or a local failure, never later than `deadlineMs`. */
  request(chainId: string, body: Uint8Array, deadlineMs: number, maxBody: number): Promise<ForwardResult> {
    if (this.#closed) return Promise.resolve({ status: 'unavailable', reason: 'connection closed' });
    this.lastUsed = Date.now();
    const id = this.#nextId;
    this.#nextId = (this.#nextId + 1) >>> 0;
    const result = new Promise<ForwardResult>((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        resolve({ status: 'timeout', reason: `no reply from the peer within ${deadlineMs} ms` });
      }, deadlineMs);
      this.#pending.set(id, { resolve, timer, maxBody });
    });
    const bytes = encodeForwardRequest(id, chainId, body);
    void this.#ready.then((ok) => {
      if (ok && this.#pending.has(id)) this.#socket.write(bytes);
    });
    return result;
  }

  /** Closes the connection and settles every pending request with `status`. */
  fail(status: 'unavailable' | 'leader_changed', reason: string): void {
    if (!this.#closed) {
      this.#closed = true;
      this.#socket.destroy();
    }
    for (const [id, p] of this.#pending) {
      this.#pending.delete(id);
      clearTimeout(p.timer);
      p.resolve({ status, reason });
    }
  }

  #settle(id: number, outcome: ForwardOutcome): void {
    const p = this.#pending.get(id);
    // A late reply (after the deadline) has no pending entry: dropped.
    if (p === undefined) return;
    if (outcome.status === 'ok' && outcome.body.length > p.maxBody) {
      this.fail('unavailable', `the peer sent a reply of ${outcome.body.length} bytes`);
      return;
    }
    this.#pending.delete(id);
    clearTimeout(p.timer);
    p.resolve(outcome);
  }
}

/** Options of {@link ForwardClient}. */
export interface ForwardClientOptions {
  tls: ForwardTls;
  /** deadline of one forwarded request, connecting included; default 2000 ms */
  deadlineMs?: number;
  logger?: ForwardLogger;
}

const LOCAL_FAILURES: ReadonlySet<ForwardResult['status']> = new Set([
  'no_leader',
  'unavailable',
  'timeout',
  'leader_changed',
]);

function samePeer(a: PeerAddress | undefined, b: PeerAddress | undefined): boolean {
  return a?.nodeId === b?.nodeId && a?.advertise === b?.advertise;
}

/**
 * The follower side: one TLS connection to the current leader. {@link setLeader} switches it
 * (pending requests of the old leader end as `leader_changed`, the new connection is opened at
 * once); a broken connection is re-opened by the next request. It is also the node's
 * {@link PeerPort}: heartbeats to the leader ride the same connection (which keeps it warm:
 * no handshake on a signature's path), and a new leader's "marks?" go to each peer on a
 * connection of their own, closed after a while unused.
 */
export class ForwardClient implements PeerPort {
  readonly #tls: ForwardTls;
  readonly #deadlineMs: number;
  readonly #log: ForwardLogger;
  #target: ForwardTarget | undefined;
  #conn: PeerConnection | undefined;
  /** connections to peers other than the leader, by "nodeId|advertise" */
  readonly #peers = new Map<string, PeerConnection>();
  /** a failure was logged and no connection has succeeded since: do not log every retry */
  #failing = false;
  #closed = false;

  constructor(opts: ForwardClientOptions) {
    this.#tls = opts.tls;
    this.#deadlineMs = opts.deadlineMs ?? DEFAULT_FORWARD_DEADLINE_MS;
    this.#log = opts.logger ?? silent;
  }

  /** The leader requests go to now; undefined while none is known (or this node leads). */
  get target(): ForwardTarget | undefined {
    return this.#target;
  }

  /** Points the client at `target` (undefined: no leader known; requests fail at once). */
  setLeader(target: ForwardTarget | undefined): void {
    if (samePeer(this.#target, target)) return;
    this.#target = target;
    // Replies still pending from the old leader are dropped: the follower answers "try again"
    // and the node re-sends to whoever leads now. The old leader's own fencing decides whether
    // it signed; a signature it made is either lost (a missed vote) or found again by the new
    // leader as the same reserved bytes.
    this.#conn?.fail('leader_changed', 'the leader changed while the request was in flight');
    this.#conn = undefined;
    if (target === undefined || this.#closed) return;
    // A connection this node already holds to the new leader (it asked it for its marks) is warm.
    const key = peerKey(target);
    const warm = this.#peers.get(key);
    this.#peers.delete(key);
    this.#conn = warm !== undefined && !warm.closed ? warm : this.#open(target);
  }

  /** Forwards one request to the current leader. Never rejects; resolves within the deadline. */
  async forward(chainId: string, body: Uint8Array): Promise<ForwardResult> {
    const target = this.#target;
    if (this.#closed) return { status: 'unavailable', reason: 'forwarding is shut down' };
    if (target === undefined) return { status: 'no_leader', reason: 'no leader is known' };
    if (
      body.length > MAX_FORWARD_REQUEST_BODY ||
      chainId === CONTROL_CHAIN_ID ||
      Buffer.byteLength(chainId) > MAX_CHAIN_ID_BYTES
    ) {
      return { status: 'bad_request' };
    }
    if (this.#conn === undefined || this.#conn.closed) this.#conn = this.#open(target);
    return await this.#conn.request(chainId, body, this.#deadlineMs, MAX_FORWARD_REPLY_BODY);
  }

  async heartbeat(peer: PeerAddress, deadlineMs: number): Promise<boolean> {
    return (await this.#control(peer, { kind: ControlKind.heartbeat }, deadlineMs)) !== undefined;
  }

  async marks(peer: PeerAddress, ballot: string, deadlineMs: number): Promise<PeerMarks | undefined> {
    const outcome = await this.#control(peer, { kind: ControlKind.marks, ballot }, deadlineMs);
    if (outcome?.status !== 'ok') return undefined;
    try {
      const answer = decodeMarksAnswer(outcome.body);
      // Counted towards a majority by node id: the answer must come from the node it names.
      return answer.nodeId === peer.nodeId ? answer : undefined;
    } catch (err) {
      this.#log.warn({ peer: peer.nodeId, err: (err as Error).message }, 'forward: malformed marks answer');
      return undefined;
    }
  }

  async raise(peer: PeerAddress, ballot: string, mark: PeerMark, deadlineMs: number): Promise<boolean> {
    const outcome = await this.#control(peer, { kind: ControlKind.raise, ballot, mark }, deadlineMs);
    return outcome?.status === 'ok' && outcome.body.length === 1 && outcome.body[0] === RAISE_ACCEPTED[0];
  }

  /** Drops every connection; pending requests end as `unavailable`. */
  close(): void {
    this.#closed = true;
    this.#conn?.fail('unavailable', 'forwarding is shut down');
    this.#conn = undefined;
    for (const c of this.#peers.values()) c.fail('unavailable', 'forwarding is shut down');
    this.#peers.clear();
  }

  /**
   * One control request: the peer's answer, or undefined when it gave none (a local failure) or
   * the connection's certificate names another node than `peer.nodeId`.
   */
  async #control(
    peer: PeerAddress,
    req: ControlRequest,
    deadlineMs: number,
  ): Promise<ForwardOutcome | undefined> {
    if (this.#closed) return undefined;
    const conn = this.#connectionTo(peer);
    const maxBody =
      req.kind === ControlKind.marks
        ? MAX_CONTROL_REPLY_BODY
        : Math.max(HEARTBEAT_ANSWER.length, RAISE_ACCEPTED.length);
    const result = await conn.request(CONTROL_CHAIN_ID, encodeControlRequest(req), deadlineMs, maxBody);
    if (LOCAL_FAILURES.has(result.status) || conn.peerId !== peer.nodeId) return undefined;
    return result as ForwardOutcome;
  }

  /** The leader connection when `peer` is the leader; else a connection of its own. */
  #connectionTo(peer: PeerAddress): PeerConnection {
    const target = this.#target;
    if (target !== undefined && samePeer(target, peer)) {
      if (this.#conn === undefined || this.#conn.closed) this.#conn = this.#open(target);
      return this.#conn;
    }
    const now = Date.now();
    for (const [key, c] of this.#peers) {
      if (c.closed || now - c.lastUsed > PEER_IDLE_MS) {
        c.fail('unavailable', 'idle');
        this.#peers.delete(key);
      }
    }
    const key = peerKey(peer);
    let conn = this.#peers.get(key);
    if (conn === undefined) {
      conn = new PeerConnection(peer, this.#tls, QUIET);
      this.#peers.set(key, conn);
    }
    return conn;
  }

  #open(target: ForwardTarget): PeerConnection {
    return new PeerConnection(target, this.#tls, {
      connected: () => {
        if (this.#failing) this.#log.info({ leader: target.nodeId }, 'forward: connected to the leader');
        this.#failing = false;
      },
      failed: (reason) => {
        if (this.#failing) return;
        this.#failing = true;
        this.#log.warn(
          { leader: target.nodeId, addr: target.advertise, reason },
          'forward: cannot reach the leader',
        );
      },
    });
  }
}

function peerKey(p: PeerAddress): string {
  return `${p.nodeId}|${p.advertise}`;
}
