/**
 * Bounding text that comes from a peer. A request may carry a chain id (or any string) of up to
 * the request size limit, about 1 MiB; echoing it into a refusal, a log line or the audit log
 * would turn every hostile request into a megabyte of output (and rotate the audit history away).
 */

/** The most bytes of a peer's string that CometKMS ever repeats. */
export const MAX_ECHO_BYTES = 256;

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: false });

/**
 * `text` unchanged when its UTF-8 form has at most `maxBytes` bytes; otherwise its first
 * `maxBytes` bytes (never splitting a character) followed by a marker saying how long it was,
 * e.g. `abc…[cut: 1048576 bytes]`.
 */
export function boundText(text: string, maxBytes = MAX_ECHO_BYTES): string {
  // A string of n UTF-16 units has at most 3n UTF-8 bytes: short strings skip the encoding.
  if (text.length * 3 <= maxBytes) return text;
  const bytes = encoder.encode(text);
  if (bytes.length <= maxBytes) return text;
  let end = maxBytes;
  // Back up to the start of a UTF-8 sequence (continuation bytes are 10xxxxxx).
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return `${decoder.decode(bytes.subarray(0, end))}…[cut: ${bytes.length} bytes]`;
}
