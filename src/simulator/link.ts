/**
 * The node's side of one established signer connection: write one request, read exactly one
 * reply, like CometBFT's SignerListenerEndpoint.SendRequest (spec §1.2).
 *
 * Like the node, it reads at most 10240 bytes per reply and drops the connection on a timeout.
 * Bytes from the signer while no request is outstanding are a protocol violation (the node would
 * take them as the reply to its next request); the link reports it and closes.
 */

import type { Duplex } from 'node:stream';
import { FrameDecoder, lengthPrefixed } from '../cometbft/framing.ts';
import { decodeMessage, encodeMessage } from '../cometbft/messages.ts';
import type { PrivvalMessage, ProtocolVersion } from '../cometbft/types.ts';

/** The node's read limit for one privval message. */
const NODE_MAX_MESSAGE_SIZE = 10240;

/** A request failed at the transport level (timeout, closed, framing); the link is closed. */
export class LinkError extends Error {
  constructor(
    message: string,
    readonly timeout = false,
  ) {
    super(message);
    this.name = 'LinkError';
  }
}

interface Pending {
  resolve: (reply: PrivvalMessage) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class SignerLink {
  private readonly decoder = new FrameDecoder({ maxLength: NODE_MAX_MESSAGE_SIZE });
  private pending: Pending | undefined;
  private closeReason: string | undefined;
  private readonly closeListeners: ((reason: string) => void)[] = [];

  /**
   * @param stream SecretConnection (tcp) or socket (unix), already established.
   * @param onViolation called with a description when the signer breaks the protocol.
   */
  constructor(
    private readonly stream: Duplex,
    private readonly version: ProtocolVersion,
    private readonly onViolation: (what: string) => void,
    readonly remoteNodeId?: string,
  ) {
    stream.on('error', (err: Error) => this.close(`transport error: ${err.message}`));
    stream.on('close', () => this.close('connection closed by the signer'));
    stream.on('end', () => this.close('connection ended by the signer'));
    stream.on('data', (chunk: Uint8Array) => this.onData(chunk));
  }

  get closed(): boolean {
    return this.closeReason !== undefined;
  }

  /** Registers a listener for the (single) close of this link. */
  onClose(listener: (reason: string) => void): void {
    if (this.closeReason !== undefined) listener(this.closeReason);
    else this.closeListeners.push(listener);
  }

  /**
   * Sends `msg` and resolves with the decoded reply. Rejects with LinkError (and closes the
   * link) on timeout, close or a framing error; rejects with CodecError on a well-framed reply
   * that does not decode (the link stays open, as on the node). One request at a time.
   */
  request(msg: PrivvalMessage, timeoutMs: number): Promise<PrivvalMessage> {
    if (this.closeReason !== undefined) return Promise.reject(new LinkError(this.closeReason));
    if (this.pending) return Promise.reject(new Error('SignerLink: a request is already in flight'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.close(`no reply within ${timeoutMs} ms`, true);
      }, timeoutMs);
      this.pending = { resolve, reject, timer };
      this.stream.write(lengthPrefixed(encodeMessage(msg, this.version)));
    });
  }

  /** Closes the connection; an outstanding request is rejected. Idempotent. */
  close(reason = 'closed by the node', timeout = false): void {
    if (this.closeReason !== undefined) return;
    this.closeReason = reason;
    const pending = this.pending;
    this.pending = undefined;
    if (pending) {
      clearTimeout(pending.timer);
      pending.reject(new LinkError(reason, timeout));
    }
    this.stream.destroy();
    for (const listener of this.closeListeners.splice(0)) listener(reason);
  }

  private onData(chunk: Uint8Array): void {
    if (this.closeReason !== undefined) return;
    let frames: Uint8Array[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      const what = `malformed reply framing: ${err instanceof Error ? err.message : String(err)}`;
      this.onViolation(what);
      this.close(what);
      return;
    }
    for (const frame of frames) {
      const pending = this.pending;
      if (!pending) {
        const what = 'unsolicited message from the signer (no request outstanding)';
        this.onViolation(what);
        this.close(what);
        return;
      }
      this.pending = undefined;
      clearTimeout(pending.timer);
      try {
        pending.resolve(decodeMessage(frame, this.version));
      } catch (err) {
        pending.reject(err instanceof Error ? err : new Error(String(err)));
      }
    }
  }
}
