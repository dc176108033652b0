/**
 * Request routing in cluster mode (ARCHITECTURE.md §4): every node dials every validator; the
 * leader answers signing requests with its own guard, a follower forwards them to the leader and
 * relays the answer, and whenever that is not possible the node is told to try again (an empty
 * Message, spec §1.2) — never a response of the expected type without a signature.
 */
import { CodecError } from '../cometbft/errors.ts';
import { decodeMessage, encodeMessage } from '../cometbft/messages.ts';
import { assertWellFormedReply, tryAgain } from '../cometbft/replies.ts';
import type { PrivvalMessage, ProtocolVersion } from '../cometbft/types.ts';
import type { RequestContext, RequestHandler } from '../privval/handler.ts';
import { NO_STAGES, type StageObserver } from '../stages.ts';
import type { ForwardOutcome, ForwardResult } from './forward.ts';

/** Whether this node may sign right now. */
export interface LocalLeadership {
  /**
   * True only while this node leads AND is ready to sign: its guards were reloaded from the
   * replicated state after winning and its HSM signing session is open. Safety never rests on
   * it (every reservation is fenced); it only keeps requests away from a node that cannot sign.
   */
  servesLocally(): boolean;
}

/** Sends a request body to the leader (implemented by `ForwardClient`). */
export interface Forwarder {
  forward(chainId: string, body: Uint8Array): Promise<ForwardResult>;
}

/** Options of {@link ClusterChainHandler}. */
export interface ClusterChainHandlerOptions {
  chainId: string;
  protocol: ProtocolVersion;
  /** this node's guard of the chain */
  guard: RequestHandler;
  leadership: LocalLeadership;
  forwarder: Forwarder;
  /** called once per forwarded request with its result (`ok` or why it became "try again") */
  onForward?: (result: string) => void;
  /** receives the duration of each forwarding round trip, as stage `forward` (src/stages.ts) */
  stages?: StageObserver;
  /**
   * called when the leader refused a forwarded request: the leader's log names this node as the
   * forwarder, this one names the validator endpoint the request came from
   */
  onRefusalRelayed?: (request: PrivvalMessage, reason: string, context: RequestContext | undefined) => void;
}

/** The reply kind a signing request must get (anything else from the leader is not relayed). */
const EXPECTED_REPLY = {
  signVoteRequest: 'signedVoteResponse',
  signProposalRequest: 'signedProposalResponse',
} as const;

/**
 * The RequestHandler of one chain's validator connections in cluster mode.
 *
 * - SignVote / SignProposal: the local guard when this node serves locally; else forwarded to
 *   the leader, whose reply is relayed only if it is an empty Message or a well-formed response
 *   of the expected type. No leader, a forwarding failure, a deadline, a leader change while in
 *   flight: an empty Message, and the node re-sends the request.
 * - PubKey and SignBytes need no leadership and are answered by the local guard on every node
 *   (the public key is read without login; SignBytes is always refused). Ping never gets here.
 */
export class ClusterChainHandler implements RequestHandler {
  readonly #opts: ClusterChainHandlerOptions;

  constructor(opts: ClusterChainHandlerOptions) {
    this.#opts = opts;
  }

  async handle(request: PrivvalMessage, ctx?: RequestContext): Promise<PrivvalMessage> {
    switch (request.kind) {
      case 'pubKeyRequest':
      case 'signBytesRequest':
      case 'pingRequest':
        return await this.#opts.guard.handle(request, ctx);
      case 'signVoteRequest':
      case 'signProposalRequest':
        if (this.#opts.leadership.servesLocally()) return await this.#opts.guard.handle(request, ctx);
        return await this.#forward(request, EXPECTED_REPLY[request.kind], ctx);
      default:
        return tryAgain();
    }
  }

  async #forward(
    request: PrivvalMessage,
    expected: PrivvalMessage['kind'],
    ctx: RequestContext | undefined,
  ): Promise<PrivvalMessage> {
    const { chainId, protocol, forwarder } = this.#opts;
    const start = performance.now();
    const result = await forwarder.forward(chainId, encodeMessage(request, protocol));
    (this.#opts.stages ?? NO_STAGES).observe('forward', performance.now() - start);
    if (result.status !== 'ok') {
      this.#report(result.status);
      return tryAgain();
    }
    let reply: PrivvalMessage;
    try {
      reply = decodeMessage(result.body, protocol);
      if (reply.kind !== 'empty' && reply.kind !== expected) {
        throw new Error(`the leader answered ${reply.kind} to a request for ${expected}`);
      }
      assertWellFormedReply(reply);
    } catch {
      this.#report('bad_reply');
      return tryAgain();
    }
    this.#report(reply.kind === 'empty' ? 'leader_retry' : 'ok');
    const refusal = 'error' in reply ? reply.error : undefined;
    if (refusal !== undefined) this.#relayedRefusal(request, refusal.description, ctx);
    return reply;
  }

  #relayedRefusal(request: PrivvalMessage, reason: string, ctx: RequestContext | undefined): void {
    try {
      this.#opts.onRefusalRelayed?.(request, reason, ctx);
    } catch {
      // an observer's failure must not change the reply
    }
  }

  #report(result: string): void {
    try {
      this.#opts.onForward?.(result);
    } catch {
      // an observer's failure must not change the reply
    }
  }
}

/** One chain as the leader side of forwarding sees it. */
export interface ForwardedChain {
  protocol: ProtocolVersion;
  guard: RequestHandler;
}

/**
 * The leader side of forwarding: answers one forwarded request with the local guard of its
 * chain, and only while `leadership.servesLocally()`; otherwise "not leader", which the
 * follower turns into "try again". The body is decoded again here and the guard runs every
 * check, so a forwarded request is never trusted more than a direct one. Only signing requests
 * are accepted: everything else is answered by the follower itself.
 */
export function leaderForwardHandler(
  chains: ReadonlyMap<string, ForwardedChain>,
  leadership: LocalLeadership,
): (chainId: string, body: Uint8Array, peer?: string) => Promise<ForwardOutcome> {
  return async (chainId, body, peer) => {
    const chain = chains.get(chainId);
    if (chain === undefined) return { status: 'unknown_chain' };
    if (!leadership.servesLocally()) return { status: 'not_leader' };
    let request: PrivvalMessage;
    try {
      request = decodeMessage(body, chain.protocol);
    } catch (err) {
      if (err instanceof CodecError) return { status: 'bad_request' };
      throw err;
    }
    if (request.kind !== 'signVoteRequest' && request.kind !== 'signProposalRequest') {
      return { status: 'bad_request' };
    }
    const reply = await chain.guard.handle(request, peer === undefined ? undefined : { forwardedBy: peer });
    return { status: 'ok', body: encodeMessage(reply, chain.protocol) };
  };
}
