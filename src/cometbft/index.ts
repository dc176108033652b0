/**
 * `cometkms/cometbft`: CometBFT's privval data layer as a typed library — the privval message
 * codec for the wire families v0.34/v0.37, v0.38 and v1.0, uvarint framing, canonical sign bytes,
 * key formats, addresses, bech32 and the `priv_validator_*.json` files.
 *
 * Everything here is pure (no sockets, no files): bytes in, values out, and a typed error
 * (`CodecError`, `KeyFormatError`) for every malformed input.
 */

export { bech32Decode, bech32Encode } from './bech32.ts';
export { CodecError, type CodecErrorCode, KeyFormatError } from './errors.ts';
export {
  DEFAULT_MAX_MESSAGE_SIZE,
  decodeUvarint,
  encodeFramedMessage,
  encodeUvarint,
  FrameDecoder,
  lengthPrefixed,
} from './framing.ts';
export {
  aminoPubKeyBytes,
  checkPubKey,
  consensusAddressBech32,
  consensusPubKeyBech32,
  cosmosPubKeyJson,
  fromBase64,
  fromHex,
  pubKeyFromJson,
  pubKeyToJson,
  publicKeyFromPrivate,
  toBase64,
  toHex,
  toHexUpper,
  validatorAddress,
} from './keys.ts';
export { decodeMessage, encodeMessage, zeroProposal, zeroVote } from './messages.ts';
export {
  formatPrivValidatorKey,
  formatPrivValidatorState,
  type PrivValidatorKey,
  type PrivValidatorState,
  parsePrivValidatorKey,
  parsePrivValidatorState,
} from './privval-files.ts';
export {
  type CanonicalProposal,
  type CanonicalVote,
  decodeCanonicalProposal,
  decodeCanonicalVote,
  isZeroBlockId,
  proposalSignBytes,
  timestampOnlyDifference,
  voteExtensionSignBytes,
  voteSignBytes,
} from './signbytes.ts';
export * from './types.ts';
export { isLowS, normalizeLowS, verifySignature } from './verify.ts';
