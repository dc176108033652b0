/**
 * The privval request session: serves one established connection (a SecretConnection for tcp,
 * a raw socket for unix) until it ends.
 *
 * Wire behaviour (spec §1.2, §1.3, §4, §8):
 * - Requests are uvarint-length-delimited `privval.Message`s, answered strictly one at a time
 *   and in order. Bytes of a pipelined second request are buffered (and the stream is paused),
 *   but that request is not decoded or handed to the handler before the reply to the first one
 *   has been written: the node has one request in flight and reads exactly one reply per
 *   request, so answering out of order would pair replies with the wrong requests.
 * - Ping is answered with PingResponse here; every other request goes to the handler.
 * - A handler that throws, or a reply that cannot be encoded, is answered with an empty Message:
 *   the node re-sends the same request (spec §1.2), which is always safe, never a signature.
 * - A well-framed body that fails to decode is answered with a refusal of its type when the type
 *   can still be read (a round of 2^31, a timestamp past year 9999: retrying the same bytes would
 *   fail the same way forever), else with an empty Message. The framing is intact, so the stream
 *   stays usable, and answering keeps the strict one-reply-per-request pairing (the Go reference
 *   sends nothing and the node then waits 5 s for a timeout). Text taken from the request is cut
 *   to a bounded length wherever it is repeated (cometbft/text.ts).
 * - A framing error (an oversize or malformed length prefix) means the byte stream can no longer
 *   be split into messages: the session closes the connection and the dialer reconnects.
 * - Replies are kept ≤ `maxReplySize` (10240, the node's read limit): a signed vote whose echoed
 *   `extension` makes it too big is re-encoded without the extension (the node ignores every
 *   returned vote field but signature, timestamp and extension signature); if it is still too
 *   big, the reply becomes an empty Message.
 * - No complete request for longer than `idleTimeoutMs` while waiting for one means the node is
 *   gone (it pings every 3.3 s when idle): the session closes the connection. Only complete
 *   requests count, so a peer trickling one byte a second cannot hold a connection open.
 * - A reply the peer does not read within `writeTimeoutMs` (the node's own read deadline is 5 s)
 *   closes the connection: a node that never reads cannot pin the session.
 */

import type { Duplex } from 'node:stream';
import pino from 'pino';
import { CodecError } from '../cometbft/errors.ts';
import { FrameDecoder, lengthPrefixed } from '../cometbft/framing.ts';
import { decodeMessage, encodeMessage, messageCaseOf } from '../cometbft/messages.ts';
import { refusalFor } from '../cometbft/replies.ts';
import { boundText } from '../cometbft/text.ts';
import type { PrivvalMessage, ProtocolVersion } from '../cometbft/types.ts';
import { NO_STAGES, type StageObserver } from '../stages.ts';
import type { RequestContext, RequestHandler } from './handler.ts';

/** Largest reply body a v0.34–v1.0 node reads (spec §1.2: compared with the length value). */
export const MAX_REPLY_SIZE = 10240;
/**
 * Default request size limit: what the largest legitimate request needs and no more. Only a vote
 * extension makes a request big: CometBFT's MaxVoteExtensionSize (1 MiB) plus two signatures of
 * at most 64 bytes plus 1 KiB for the other fields (spec §10.2: the same bound later CometBFT
 * lines put on privval messages).
 */
export const DEFAULT_MAX_REQUEST_SIZE = 1024 * 1024 + 2 * 64 + 1024;
/** Default time without a complete request after which the connection counts as dead (the node pings every 3.3 s). */
export const DEFAULT_IDLE_TIMEOUT_MS = 10_000;
/** Default time a reply may wait for the peer to read it (the node's own read deadline is 5 s). */
export const DEFAULT_WRITE_TIMEOUT_MS = 5_000;

/** Options of {@link runSession}. */
export interface SessionOptions {
  version: ProtocolVersion;
  handler: RequestHandler;
  /** handed to the handler with every request (which endpoint, which remote node) */
  context?: RequestContext;
  /** Largest accepted request body; a longer length prefix closes the connection. Default: see DEFAULT_MAX_REQUEST_SIZE. */
  maxRequestSize?: number;
  /** Time without a complete request (while waiting for one) that ends the session. Default 10 s. */
  idleTimeoutMs?: number;
  /** Time a reply may take to be taken by the transport before the session ends. Default 5 s. */
  writeTimeoutMs?: number;
  /** Largest reply body written. Default 10240. */
  maxReplySize?: number;
  logger?: pino.Logger;
  /** receives the decode, encode and write times of signing requests (src/stages.ts) */
  stages?: StageObserver;
}

/**
 * Why a session ended:
 * - `eof`: the peer ended the stream (after any fully received requests were answered);
 * - `closed`: the stream was closed or destroyed (by the peer or by the owner, e.g. on stop);
 * - `idle-timeout`: no complete request was received for `idleTimeoutMs`;
 * - `write-timeout`: a reply was not taken by the transport within `writeTimeoutMs`;
 * - `framing-error`: an oversize or malformed length prefix;
 * - `error`: the stream reported an error.
 */
export type SessionEndReason =
  | 'eof'
  | 'closed'
  | 'idle-timeout'
  | 'write-timeout'
  | 'framing-error'
  | 'error';

/** The outcome of {@link runSession}. */
export interface SessionEnd {
  reason: SessionEndReason;
  error?: Error;
  /** Requests answered (pings included). */
  requests: number;
}

/**
 * Serves `stream` until it ends. Resolves (never rejects) once the stream is closed, all timers
 * are cleared and the in-flight request, if any, has settled. The stream is destroyed on every
 * way out. To stop a session early, destroy the stream.
 */
export function runSession(stream: Duplex, opts: SessionOptions): Promise<SessionEnd> {
  return new Session(stream, opts).done;
}

const silentLogger = pino({ level: 'silent' });

class Session {
  readonly done: Promise<SessionEnd>;
  private resolveDone!: (end: SessionEnd) => void;
  /**
   * Settles the reply being written, if one is: finish() calls it. (Not a race against a
   * "finished" promise: every race would leave a reaction on that promise until the session
   * ends, one per reply, which on a connection that lives for days is a leak.)
   */
  private settleWrite: (() => void) | undefined;

  private readonly decoder: FrameDecoder;
  private readonly idleTimeoutMs: number;
  private readonly writeTimeoutMs: number;
  private readonly maxReplySize: number;
  private readonly log: pino.Logger;
  private readonly stages: StageObserver;
  /** when the reply to the signing request being answered began to be encoded; else undefined */
  private encodeStart: number | undefined;
  private readonly queue: Uint8Array[] = [];
  private idleTimer: NodeJS.Timeout | undefined;
  private busy = false;
  private inputEnded = false;
  private end: SessionEnd | undefined;
  private requests = 0;

  constructor(
    private readonly stream: Duplex,
    private readonly opts: SessionOptions,
  ) {
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
    this.decoder = new FrameDecoder({ maxLength: opts.maxRequestSize ?? DEFAULT_MAX_REQUEST_SIZE });
    this.idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.writeTimeoutMs = opts.writeTimeoutMs ?? DEFAULT_WRITE_TIMEOUT_MS;
    this.maxReplySize = opts.maxReplySize ?? MAX_REPLY_SIZE;
    this.log = opts.logger ?? silentLogger;
    this.stages = opts.stages ?? NO_STAGES;

    // The 'error' listener stays attached for the stream's whole life: an 'error' without a
    // listener would crash the process.
    stream.on('error', (err: Error) => this.finish('error', err));
    stream.on('close', () => this.finish('closed'));
    stream.on('end', () => {
      this.inputEnded = true;
      if (!this.busy) this.finish('eof');
    });
    stream.on('data', (chunk: Buffer | Uint8Array) => this.onData(chunk));
    if (stream.destroyed) this.finish('closed');
    else this.armIdleTimer();
  }

  private onData(chunk: Uint8Array): void {
    if (this.end) return;
    let frames: Uint8Array[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.log.warn({ err: error }, 'privval: malformed request framing; closing the connection');
      this.finish('framing-error', error);
      return;
    }
    // Partial frames do not count as life: the idle timer keeps running until a whole request
    // is in (see the module comment).
    if (frames.length === 0) return;
    this.queue.push(...frames);
    void this.drain();
  }

  /** Answers queued requests one by one; only one drain loop runs at a time. */
  private async drain(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    this.clearIdleTimer();
    // Backpressure: a peer that pipelines requests waits in its socket buffer, not in our memory.
    this.stream.pause();
    try {
      for (let frame = this.queue.shift(); frame && !this.end; frame = this.queue.shift()) {
        this.encodeStart = undefined;
        const reply = await this.answer(frame);
        if (this.end) break;
        const framed = lengthPrefixed(reply);
        const encodeStart = this.encodeStart;
        if (encodeStart === undefined) {
          await this.write(framed);
        } else {
          const writeStart = performance.now();
          this.stages.observe('encode', writeStart - encodeStart);
          await this.write(framed);
          this.stages.observe('write', performance.now() - writeStart);
        }
        this.requests++;
      }
    } finally {
      this.busy = false;
    }
    if (this.end) {
      this.resolveDone(this.end);
      return;
    }
    if (this.inputEnded) {
      this.finish('eof');
      return;
    }
    this.armIdleTimer();
    this.stream.resume();
  }

  /** Produces the encoded reply body for one request body; never throws. */
  private async answer(body: Uint8Array): Promise<Uint8Array> {
    const { version } = this.opts;
    const decodeStart = performance.now();
    let request: PrivvalMessage;
    try {
      request = decodeMessage(body, version);
    } catch (err) {
      if (!(err instanceof CodecError)) throw err;
      const kind = messageCaseOf(body, version);
      const description = `unable to decode ${kind ?? 'request'}: ${boundText(err.message)}`;
      const refusal = kind === undefined ? undefined : refusalFor(kind, description);
      this.log.warn(
        { reason: description, bytes: body.length },
        refusal === undefined
          ? 'privval: undecodable request; replying with an empty Message'
          : 'privval: undecodable request; refusing it',
      );
      return encodeMessage(refusal ?? { kind: 'empty' }, version);
    }
    if (request.kind === 'pingRequest') return encodeMessage({ kind: 'pingResponse' }, version);
    const signing = request.kind === 'signVoteRequest' || request.kind === 'signProposalRequest';
    if (signing) this.stages.observe('decode', performance.now() - decodeStart);

    let reply: PrivvalMessage;
    try {
      reply = await this.opts.handler.handle(request, this.opts.context);
    } catch (err) {
      this.log.error(
        { err, request: request.kind },
        'privval: request handler failed; replying with an empty Message',
      );
      return encodeMessage({ kind: 'empty' }, version);
    }
    if (signing) this.encodeStart = performance.now();
    return this.encodeReply(reply);
  }

  private encodeReply(reply: PrivvalMessage): Uint8Array {
    const { version } = this.opts;
    try {
      let body = encodeMessage(reply, version);
      if (
        body.length > this.maxReplySize &&
        reply.kind === 'signedVoteResponse' &&
        reply.vote.extension.length > 0
      ) {
        // The node never reads the echoed extension back (spec §1.2), so leaving it out is safe.
        const trimmed: PrivvalMessage = { ...reply, vote: { ...reply.vote, extension: new Uint8Array(0) } };
        body = encodeMessage(trimmed, version);
      }
      if (body.length <= this.maxReplySize) return body;
      this.log.error(
        { reply: reply.kind, bytes: body.length, max: this.maxReplySize },
        'privval: reply exceeds the node read limit; replying with an empty Message',
      );
    } catch (err) {
      this.log.error(
        { err, reply: reply.kind },
        'privval: reply cannot be encoded; replying with an empty Message',
      );
    }
    return encodeMessage({ kind: 'empty' }, version);
  }

  /**
   * Writes one reply; resolves once it is handed to the transport, or the session finished, or
   * (ending the session) after `writeTimeoutMs` without the peer taking it.
   */
  private write(bytes: Uint8Array): Promise<void> {
    if (this.end) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const settle = (): void => {
        clearTimeout(timer);
        if (this.settleWrite === settle) this.settleWrite = undefined;
        resolve();
      };
      const timer = setTimeout(() => {
        this.log.warn(
          { writeTimeoutMs: this.writeTimeoutMs },
          'privval: the node does not read its replies; closing the connection',
        );
        this.finish('write-timeout');
      }, this.writeTimeoutMs);
      // A transport that never calls back after being destroyed must not hang the session:
      // finishing settles this write too.
      this.settleWrite = settle;
      this.stream.write(bytes, (err) => {
        if (err) this.finish('error', err);
        settle();
      });
    });
  }

  private armIdleTimer(): void {
    this.clearIdleTimer();
    if (this.end || this.busy) return;
    this.idleTimer = setTimeout(() => {
      this.log.warn(
        { idleMs: this.idleTimeoutMs },
        'privval: no request from the node; closing the connection',
      );
      this.finish('idle-timeout');
    }, this.idleTimeoutMs);
  }

  private clearIdleTimer(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  /** Ends the session once; the promise resolves when no request is in flight any more. */
  private finish(reason: SessionEndReason, error?: Error): void {
    if (this.end) return;
    this.end = error ? { reason, error, requests: this.requests } : { reason, requests: this.requests };
    this.clearIdleTimer();
    this.queue.length = 0;
    this.settleWrite?.();
    if (!this.stream.destroyed) this.stream.destroy();
    if (!this.busy) this.resolveDone(this.end);
  }
}
