import type { PrivvalMessage } from '../cometbft/types.ts';

/**
 * Where a request came from. It names the requester in logs and decisions; it never takes part
 * in deciding anything.
 */
export interface RequestContext {
  /** the validator endpoint the request arrived on, e.g. `tcp://10.0.0.5:26659` */
  endpoint?: string;
  /** the SecretConnection node id of that endpoint's node (tcp only) */
  remoteNodeId?: string;
  /** the cluster node that forwarded the request to this leader (its certificate's CN) */
  forwardedBy?: string;
}

/**
 * Answers one decoded privval request. The request session calls it strictly one request at a
 * time per connection; Ping is answered by the session itself and never reaches a handler.
 *
 * The reply must follow spec §1.2: a response of the expected type carrying a signature, a
 * response of the expected type carrying a RemoteSignerError (final refusal), or
 * `{ kind: 'empty' }` to make the node re-send the same request ("try again"). A handler never
 * returns a response of the expected type without either a signature or an error.
 */
export interface RequestHandler {
  handle(request: PrivvalMessage, context?: RequestContext): Promise<PrivvalMessage>;
}
