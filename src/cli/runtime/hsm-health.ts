/**
 * HSM health as the signing path sees it. The runtime wraps every chain's signer so that each
 * signature attempt updates one shared record; `/status` and the metrics read it instead of
 * probing the token from the admin API (a probe would queue behind signatures on the token).
 */
import type { PubKey } from '../../cometbft/types.ts';
import type { Signer } from '../../guard/signer.ts';

/** The outcome of the last HSM operation of the node. */
export class HsmHealth {
  /** false after a failed signature, true again after the next successful one */
  reachable = true;
  lastError: string | undefined;

  constructor(private readonly onError: (err: Error) => void = () => {}) {}

  /** A signer that reports every attempt of `inner` here and otherwise behaves exactly like it. */
  observe(inner: Signer): Signer {
    return new ObservedSigner(inner, this);
  }

  /** Notes a successful HSM operation. */
  ok(): void {
    this.reachable = true;
  }

  /** Notes a failed HSM operation. */
  failed(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    this.reachable = false;
    this.lastError = e.message;
    this.onError(e);
  }
}

class ObservedSigner implements Signer {
  readonly pubKey: PubKey;

  constructor(
    private readonly inner: Signer,
    private readonly health: HsmHealth,
  ) {
    this.pubKey = inner.pubKey;
  }

  async sign(message: Uint8Array): Promise<Uint8Array> {
    try {
      const signature = await this.inner.sign(message);
      this.health.ok();
      return signature;
    } catch (err) {
      this.health.failed(err);
      throw err;
    }
  }
}
