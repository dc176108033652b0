/**
 * Merlin v1.0 transcripts (spec §3.3), used by SecretConnection to derive the 32-byte
 * authentication challenge from both ephemeral keys and the DH secret.
 */
import { Strobe128 } from './keccak-strobe.ts';

const utf8 = new TextEncoder();

function le32(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new RangeError(`Merlin: length ${n} does not fit in a u32`);
  }
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n, true);
  return out;
}

/** A Merlin transcript: a STROBE-128 state with labelled, length-framed messages. */
export class MerlinTranscript {
  private readonly strobe: Strobe128;

  /** Starts a transcript with the application's domain-separation label. */
  constructor(label: string) {
    this.strobe = new Strobe128(utf8.encode('Merlin v1.0'));
    this.appendMessage('dom-sep', utf8.encode(label));
  }

  /** Absorbs `message` under `label` (meta-AD of label ‖ LE32(len), then AD of the message). */
  appendMessage(label: string, message: Uint8Array): void {
    this.strobe.metaAd(utf8.encode(label), false);
    this.strobe.metaAd(le32(message.length), true);
    this.strobe.ad(message, false);
  }

  /** Squeezes `n` challenge bytes bound to everything absorbed so far. */
  challengeBytes(label: string, n: number): Uint8Array {
    this.strobe.metaAd(utf8.encode(label), false);
    this.strobe.metaAd(le32(n), true);
    return this.strobe.prf(n, false);
  }
}
