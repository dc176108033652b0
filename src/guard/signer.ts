import type { PubKey } from '../cometbft/types.ts';

/**
 * What the guard needs from a key: its public half and a signature over exact bytes. The
 * PKCS#11 backend implements it; the guard knows nothing else of HSMs.
 */
export interface Signer {
  readonly pubKey: PubKey;
  /**
   * Signs `message` (ed25519: the bytes; secp256k1: ECDSA over SHA-256 of them, low-S, r‖s).
   * Implementations verify the signature before returning it and throw on any failure.
   */
  sign(message: Uint8Array): Promise<Uint8Array>;
}
