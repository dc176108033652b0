/**
 * The subset of STROBE-128 (v1.0.2) that Merlin transcripts need: meta-AD, AD and PRF.
 * Spec: shared/spec/privval-protocol.md §3.2. The Keccak-f[1600] permutation comes from
 * @noble/hashes; everything else is the duplex construction around it.
 */
import { keccakP } from '@noble/hashes/sha3.js';
import { swap32IfBE, u32 } from '@noble/hashes/utils.js';

/** Rate in bytes for 128-bit security: 200 − 2·(128/8) − 2. */
const R = 166;

const FLAG_I = 0x01;
const FLAG_A = 0x02;
const FLAG_C = 0x04;
const FLAG_M = 0x10;
const FLAG_K = 0x20;

/** A STROBE-128 duplex state supporting only the operations Merlin uses. */
export class Strobe128 {
  private readonly st = new Uint8Array(200);
  /** 32-bit lane view of `st`, the form keccakP works on. */
  private readonly st32 = u32(this.st);
  private pos = 0;
  private posBegin = 0;
  private curFlags = 0;

  /** Initialises the state for `protocolLabel` (STROBE "init" followed by meta-AD of the label). */
  constructor(protocolLabel: Uint8Array) {
    this.st.set([0x01, R + 2, 0x01, 0x00, 0x01, 0x60], 0);
    this.st.set(new TextEncoder().encode('STROBEv1.0.2'), 6);
    this.permute();
    this.metaAd(protocolLabel, false);
  }

  /** meta-AD: absorbs framing data (flags M|A). */
  metaAd(data: Uint8Array, more: boolean): void {
    this.beginOp(FLAG_M | FLAG_A, more);
    this.absorb(data);
  }

  /** AD: absorbs associated data (flag A). */
  ad(data: Uint8Array, more: boolean): void {
    this.beginOp(FLAG_A, more);
    this.absorb(data);
  }

  /** PRF: squeezes `n` pseudo-random bytes (flags I|A|C). */
  prf(n: number, more: boolean): Uint8Array {
    this.beginOp(FLAG_I | FLAG_A | FLAG_C, more);
    return this.squeeze(n);
  }

  /** Keccak-f[1600] over the byte state; lanes are little-endian, hence the swap on BE hosts. */
  private permute(): void {
    swap32IfBE(this.st32);
    keccakP(this.st32);
    swap32IfBE(this.st32);
  }

  private runF(): void {
    this.st[this.pos]! ^= this.posBegin;
    this.st[this.pos + 1]! ^= 0x04;
    this.st[R + 1]! ^= 0x80;
    this.permute();
    this.pos = 0;
    this.posBegin = 0;
  }

  private absorb(data: Uint8Array): void {
    for (const b of data) {
      this.st[this.pos]! ^= b;
      this.pos++;
      if (this.pos === R) this.runF();
    }
  }

  private squeeze(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      out[i] = this.st[this.pos]!;
      this.st[this.pos] = 0;
      this.pos++;
      if (this.pos === R) this.runF();
    }
    return out;
  }

  private beginOp(flags: number, more: boolean): void {
    if (more) {
      // Continuing an operation: STROBE requires the same flags and adds no framing.
      if (flags !== this.curFlags) {
        throw new Error(`STROBE: continued operation with flags ${flags}, expected ${this.curFlags}`);
      }
      return;
    }
    const oldBegin = this.posBegin;
    this.posBegin = this.pos + 1;
    this.curFlags = flags;
    this.absorb(new Uint8Array([oldBegin, flags]));
    // Cipher and key operations must start on a fresh block.
    if ((flags & (FLAG_C | FLAG_K)) !== 0 && this.pos !== 0) this.runF();
  }
}
