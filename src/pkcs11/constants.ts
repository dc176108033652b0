/**
 * PKCS#11 values CometKMS needs that pkcs11js 2.1.7 does not export (PKCS#11 v3.0 additions).
 * Everything else comes from pkcs11js itself.
 */

/** Key type of an Edwards-curve key (Ed25519). */
export const CKK_EC_EDWARDS = 0x40;
/** Generates an Edwards-curve key pair. */
export const CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
/** Pure EdDSA (Ed25519 without pre-hash or context when no parameter is given). */
export const CKM_EDDSA = 0x1057;
