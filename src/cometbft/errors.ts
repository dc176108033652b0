/**
 * The error types of the CometBFT layer. Every decoding or encoding failure in
 * `src/cometbft/{wire,messages,framing,signbytes}.ts` is a `CodecError`, and every malformed key,
 * address or key encoding (keys.ts, bech32.ts) a `KeyFormatError`, so callers can tell malformed
 * input (drop or answer with an error) from a programming error (crash).
 */

/**
 * Why a codec operation failed.
 * - `TRUNCATED`: the input ended inside a field, varint or frame.
 * - `OVERSIZE`: a frame length prefix exceeds the configured maximum.
 * - `BAD_VARINT`: a varint longer than 10 bytes or overflowing 64 bits.
 * - `BAD_WIRE_TYPE`: a known field with the wrong wire type, or a wire type that cannot be skipped.
 * - `UNKNOWN_MESSAGE`: a `privval.Message` oneof case this protocol version does not have.
 * - `INVALID_FIELD`: a well-formed field whose value is out of range or otherwise not acceptable.
 * - `UNSUPPORTED`: a value the selected protocol version cannot express.
 */
export type CodecErrorCode =
  | 'TRUNCATED'
  | 'OVERSIZE'
  | 'BAD_VARINT'
  | 'BAD_WIRE_TYPE'
  | 'UNKNOWN_MESSAGE'
  | 'INVALID_FIELD'
  | 'UNSUPPORTED';

/** A codec failure with a machine-readable `code`. */
export class CodecError extends Error {
  readonly code: CodecErrorCode;

  constructor(code: CodecErrorCode, message: string) {
    super(message);
    this.name = 'CodecError';
    this.code = code;
  }
}

/** A key, address, file or encoding that does not have the required form. */
export class KeyFormatError extends Error {
  override name = 'KeyFormatError';
}
