import { ed25519 } from '@noble/curves/ed25519.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import type { PubKey } from '../../src/cometbft/types.ts';
import type { Signer } from '../../src/guard/signer.ts';

/** What the next `sign` call does: `none` signs normally (to let earlier calls pass). */
export type SignerFault = 'none' | 'throw' | 'bad-signature';

/**
 * A {@link Signer} holding its key in memory, for tests only. ed25519 signs the message;
 * secp256k1 signs SHA-256(message) with RFC 6979 nonces and low-S, as r‖s (64 bytes).
 * Records every message it signed, and can be told to fail.
 */
export class InMemorySigner implements Signer {
  readonly pubKey: PubKey;
  /** Every message signed so far, in order (faulted calls included). */
  readonly signed: Uint8Array[] = [];
  private readonly faults: SignerFault[] = [];

  private constructor(
    private readonly secret: Uint8Array,
    type: PubKey['type'],
  ) {
    const bytes = type === 'ed25519' ? ed25519.getPublicKey(secret) : secp256k1.getPublicKey(secret, true);
    this.pubKey = { type, bytes };
  }

  /** An ed25519 signer; a fixed seed makes keys reproducible. */
  static ed25519(seed: Uint8Array = ed25519.utils.randomSecretKey()): InMemorySigner {
    return new InMemorySigner(seed, 'ed25519');
  }

  /** A secp256k1 signer; a fixed scalar makes keys reproducible. */
  static secp256k1(secret: Uint8Array = secp256k1.utils.randomSecretKey()): InMemorySigner {
    return new InMemorySigner(secret, 'secp256k1');
  }

  /** Queues one fault per later `sign` call, in order. */
  injectFaults(...faults: SignerFault[]): void {
    this.faults.push(...faults);
  }

  async sign(message: Uint8Array): Promise<Uint8Array> {
    this.signed.push(message.slice());
    const fault = this.faults.shift();
    if (fault === 'throw') throw new Error('injected fault: HSM sign failed');
    const signature =
      this.pubKey.type === 'ed25519'
        ? ed25519.sign(message, this.secret)
        : secp256k1.sign(message, this.secret, { prehash: true, lowS: true });
    if (fault === 'bad-signature') {
      const bad = signature.slice();
      bad[0] = (bad[0] ?? 0) ^ 0xff;
      return bad;
    }
    return signature;
  }
}
