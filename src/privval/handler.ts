import type { PrivvalMessage } from '../cometbft/types.ts';

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
  handle(request: PrivvalMessage): Promise<PrivvalMessage>;
}
