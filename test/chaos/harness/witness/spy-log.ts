/**
 * Reads the log OpenSC's pkcs11-spy writes for one process: every PKCS#11 call as a record
 *
 *   34: C_Sign
 *   2026-12-04 19:18:44.842
 *   [in] hSession = 0x5
 *   [in] pData[ulDataLen] 000000001922fdd8 / 200
 *       00000000  07 07 07 ...                      ................
 *   [out] pSignature[*pulSignatureLen] 0000000019277ca0 / 64
 *       00000000  A1 F7 BB ...                      ............rGX.
 *   Returned:  0 CKR_OK
 *
 * The spy writes the inputs before it calls the real module and the outputs and return value
 * after, flushing each time. A process killed in between leaves a record without "Returned":
 * a sign that produced no signature anyone could have received. Only C_Sign records that
 * returned CKR_OK with a signature count as signatures made.
 */

/** One successful C_Sign as the spy saw it. */
export interface SpySign {
  /** the log file and the call's sequence number in it */
  file: string;
  seq: number;
  /** wall time the spy printed */
  time: string;
  session: string;
  data: Uint8Array;
  signature: Uint8Array;
}

/** Everything of interest in one spy log. */
export interface SpyLog {
  signs: SpySign[];
  /** C_Sign calls that returned an error */
  failedSigns: number;
  /** a C_Sign whose record ends without a return value (the process died during the call) */
  interruptedSign: boolean;
}

const HEADER = /^(\d+): (C_\w+)$/;
const HEXLINE = /^\s+[0-9A-Fa-f]{8}\s+((?:[0-9A-Fa-f]{2} ?)+)/;
const BUFFER = /^\[(in|out)\] (\w+)\[[^\]]*\] [0-9A-Fa-f]+ \/ (\d+)$/;

/** Parses one spy log's text. */
export function parseSpyLog(file: string, text: string): SpyLog {
  const out: SpyLog = { signs: [], failedSigns: 0, interruptedSign: false };
  const lines = text.split('\n');
  let i = 0;
  while (i < lines.length) {
    const head = HEADER.exec(lines[i]!);
    i++;
    if (head === null) continue;
    const seq = Number(head[1]);
    const fn = head[2]!;
    const time = lines[i] ?? '';
    let session = '';
    const buffers = new Map<string, { declared: number; bytes: number[] }>();
    let current: { declared: number; bytes: number[] } | undefined;
    let returned: string | undefined;
    for (; i < lines.length && !HEADER.test(lines[i]!); i++) {
      const line = lines[i]!;
      const buf = BUFFER.exec(line);
      if (buf !== null) {
        current = { declared: Number(buf[3]), bytes: [] };
        buffers.set(`${buf[1]}:${buf[2]}`, current);
        continue;
      }
      const hexLine = HEXLINE.exec(line);
      if (hexLine !== null && current !== undefined) {
        for (const h of hexLine[1]!.trim().split(/\s+/)) current.bytes.push(Number.parseInt(h, 16));
        continue;
      }
      current = undefined;
      if (line.startsWith('[in] hSession = ')) session = line.slice('[in] hSession = '.length).trim();
      else if (line.startsWith('Returned:')) returned = line;
    }
    if (fn !== 'C_Sign') continue;
    if (returned === undefined) {
      out.interruptedSign = true;
      continue;
    }
    if (!/CKR_OK\b/.test(returned)) {
      out.failedSigns++;
      continue;
    }
    const data = buffers.get('in:pData');
    const sig = buffers.get('out:pSignature');
    // A size query (pSignature NULL) returns CKR_OK without a signature: nothing was signed yet.
    if (data === undefined || sig === undefined || sig.bytes.length === 0) continue;
    if (data.bytes.length !== data.declared || sig.bytes.length !== sig.declared) {
      throw new Error(`${file}: C_Sign #${seq}: hex dump shorter than its declared length`);
    }
    out.signs.push({
      file,
      seq,
      time,
      session,
      data: Uint8Array.from(data.bytes),
      signature: Uint8Array.from(sig.bytes),
    });
  }
  return out;
}
