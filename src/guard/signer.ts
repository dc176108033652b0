import type { PubKey } from '../cometbft/types.ts';

/**
 * What the guard needs from a key: its public half and a signature over exact bytes. The
 * PKCS#11 backend implements it; the guard knows nothing else of HSMs.
 */
export interface Signer {
  readonly pubKey: PubKey;
  /**
   * Signs `message` (ed25519: the bytes; secp256k1: ECDSA over SHA-256 of them, low-S, r‖s) and
   * throws on any failure. The guard verifies every signature before it returns one, whether or
   * not the implementation did (the node's PKCS#11 signers leave it to the guard). Calls may
   * overlap: an implementation serialises them as its device needs.
   */
  sign(message: Uint8Array): Promise<Uint8Array>;
}
