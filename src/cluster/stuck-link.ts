/**
 * Gives up a validator connection this node cannot serve (cluster mode).
 *
 * A CometBFT node takes one signer connection at a time. Every KMS node dials it, the first one
 * in holds it, and the others wait in its accept queue. If the holder can neither sign (it does
 * not lead) nor forward (it is cut from etcd, so it knows no leader, or from the leader's forward
 * port), each signing request gets "try again" for as long as that lasts, though another KMS node
 * could serve the validator at once. This handler watches the answers on one connection: when
 * every signing request for `stuckAfterMs` got "try again", it asks for the connection to be
 * let go (`onStuck`), and the node takes the next signer in its queue.
 *
 * Only liveness is at stake: whichever KMS node holds the connection, every signature still goes
 * through the leader's fenced reservation. `stuckAfterMs` is longer than a leader change (well
 * under a second with pre-emption), so a failover alone does not move connections around; when
 * the whole cluster cannot sign (etcd has no quorum), connections move from node to node every
 * few seconds, which costs a handshake each and nothing else.
 */
import type { PrivvalMessage } from '../cometbft/types.ts';
import type { RequestContext, RequestHandler } from '../privval/handler.ts';

/** How long a connection may get nothing but "try again" before it is let go. */
export const STUCK_LINK_AFTER_MS = 2_000;
/** How long a node that let a connection go waits before it dials that validator again. */
export const STUCK_LINK_HOLD_OFF_MS = 1_000;

export interface StuckLinkOptions {
  /** monotonic milliseconds */
  now: () => number;
  /** default {@link STUCK_LINK_AFTER_MS} */
  stuckAfterMs?: number;
  /** called once per stuck spell, after the reply that completed it has been returned */
  onStuck: (why: string) => void;
}

export class YieldWhenStuck implements RequestHandler {
  readonly #inner: RequestHandler;
  readonly #o: StuckLinkOptions;
  readonly #stuckAfterMs: number;
  /** when the first "try again" since the last real answer was given; undefined: none since */
  #retryingSince: number | undefined;

  constructor(inner: RequestHandler, options: StuckLinkOptions) {
    this.#inner = inner;
    this.#o = options;
    this.#stuckAfterMs = options.stuckAfterMs ?? STUCK_LINK_AFTER_MS;
  }

  /** A new connection starts with a clean count (a spell on the last one says nothing of it). */
  reset(): void {
    this.#retryingSince = undefined;
  }

  async handle(request: PrivvalMessage, ctx?: RequestContext): Promise<PrivvalMessage> {
    const reply = await this.#inner.handle(request, ctx);
    if (request.kind !== 'signVoteRequest' && request.kind !== 'signProposalRequest') return reply;
    if (reply.kind !== 'empty') {
      // a signature or a refusal: someone could serve the request
      this.#retryingSince = undefined;
      return reply;
    }
    const now = this.#o.now();
    this.#retryingSince ??= now;
    const stuckFor = now - this.#retryingSince;
    if (stuckFor >= this.#stuckAfterMs) {
      this.#retryingSince = undefined;
      const why = `every signing request for ${Math.round(stuckFor)} ms got "try again": this node can neither sign nor forward`;
      // After the reply has been handed back: the session answers first, then the link goes.
      setImmediate(() => this.#o.onStuck(why));
    }
    return reply;
  }
}
