/**
 * Sign latency through the PKCS#11 wrapper (lock, C_SignInit + C_Sign, low-S, verification)
 * against a bare pkcs11js C_SignInit + C_Sign on the same token, in one run, on a temporary
 * SoftHSM token. Run it in a process that has not opened another PKCS#11 token yet: SoftHSM
 * reads SOFTHSM2_CONF once per process.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { sha256 } from '@noble/hashes/sha2.js';
import pkcs11js from 'pkcs11js';
import type { KeyType } from '../src/cometbft/types.ts';
import { CKM_EDDSA } from '../src/pkcs11/constants.ts';
import { openHsm } from '../src/pkcs11/hsm.ts';
import { acquireModule, type LoadedModule, releaseModule, tokenLabel } from '../src/pkcs11/module.ts';
import { initSoftHsmToken, randomPin, SOFTHSM_MODULE } from '../src/pkcs11/softhsm.ts';
import type { BenchResult } from './types.ts';

const SIGNS = 2000;
const WARMUP = 100;
const LABEL = 'bench';

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** Times `n` sequential calls of `fn`, in milliseconds each. */
async function time(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn(i);
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return out.sort((a, b) => a - b);
}

/** A sign-bytes-sized message (a prevote is about 110 bytes). */
function message(i: number): Uint8Array {
  return new TextEncoder().encode(`bench vote ${i} `.padEnd(110, '.'));
}

/** Bare pkcs11js: find the private key once, then C_SignInit + C_SignAsync per signature. */
export function bareSigner(module: LoadedModule, token: string, label: string, type: KeyType) {
  const pk = module.pkcs11;
  const slot = pk.C_GetSlotList(true).find((s) => tokenLabel(pk.C_GetTokenInfo(s)) === token);
  if (slot === undefined) throw new Error(`token ${token} not found`);
  const session = pk.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
  pk.C_FindObjectsInit(session, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_LABEL, value: label },
  ]);
  const key = pk.C_FindObjects(session);
  pk.C_FindObjectsFinal(session);
  if (key === null) throw new Error(`key ${label} not found`);
  const mechanism = { mechanism: type === 'ed25519' ? CKM_EDDSA : pkcs11js.CKM_ECDSA };
  return {
    sign: (data: Buffer) => {
      pk.C_SignInit(session, mechanism, key);
      return pk.C_SignAsync(session, data, Buffer.alloc(64));
    },
    close: () => pk.C_CloseSession(session),
  };
}

/** Runs the benchmark on a fresh temporary SoftHSM token and returns its results. */
export async function benchPkcs11(): Promise<BenchResult[]> {
  const dir = await mkdtemp(join(tmpdir(), 'cometkms-bench-pkcs11-'));
  const savedConf = process.env.SOFTHSM2_CONF;
  const results: BenchResult[] = [];
  try {
    const pin = randomPin();
    await initSoftHsmToken({ dir, label: LABEL, userPin: pin, soPin: randomPin() });
    const hsm = await openHsm({ module: SOFTHSM_MODULE, tokenLabel: LABEL });
    // Shares the Hsm's module (one per process) for the bare baseline.
    const module = acquireModule(SOFTHSM_MODULE);
    try {
      await hsm.generateKey('ed', 'ed25519', pin);
      await hsm.generateKey('k1', 'secp256k1', pin);
      await hsm.openSigningSession(pin);
      const r3 = (x: number) => Math.round(x * 1000) / 1000;
      for (const [label, type] of [
        ['ed', 'ed25519'],
        ['k1', 'secp256k1'],
      ] as const) {
        const signer = hsm.signer(label, type);
        const bare = bareSigner(module, LABEL, label, type);
        try {
          // The bare call gets exactly what the token signs: the message, or its SHA-256.
          const data = (i: number) => Buffer.from(type === 'ed25519' ? message(i) : sha256(message(i)));
          await time(WARMUP, (i) => signer.sign(message(i)));
          await time(WARMUP, (i) => bare.sign(data(i)));
          const wrapped = await time(SIGNS, (i) => signer.sign(message(i)));
          const inputs = Array.from({ length: SIGNS }, (_, i) => data(i));
          const raw = await time(SIGNS, (i) => bare.sign(inputs[i] as Buffer));
          const note = `${SIGNS} sequential signs, SoftHSM 2.6`;
          const wrapperNote = `${note}; includes lock, SHA-256 (secp256k1), low-S and signature verification`;
          results.push(
            {
              name: `pkcs11.${type}.wrapper.p50`,
              unit: 'ms',
              value: r3(percentile(wrapped, 50)),
              note: wrapperNote,
            },
            {
              name: `pkcs11.${type}.wrapper.p99`,
              unit: 'ms',
              value: r3(percentile(wrapped, 99)),
              note: wrapperNote,
            },
            { name: `pkcs11.${type}.bare.p50`, unit: 'ms', value: r3(percentile(raw, 50)), note },
            { name: `pkcs11.${type}.bare.p99`, unit: 'ms', value: r3(percentile(raw, 99)), note },
            {
              name: `pkcs11.${type}.ratio.p50`,
              unit: 'x',
              value: Math.round((percentile(wrapped, 50) / percentile(raw, 50)) * 100) / 100,
              note: 'wrapper p50 / bare p50, same run',
            },
            {
              name: `pkcs11.${type}.ratio.p99`,
              unit: 'x',
              value: Math.round((percentile(wrapped, 99) / percentile(raw, 99)) * 100) / 100,
              note: 'wrapper p99 / bare p99, same run',
            },
          );
        } finally {
          bare.close();
        }
      }
    } finally {
      releaseModule(module);
      await hsm.close();
    }
  } finally {
    if (savedConf === undefined) delete process.env.SOFTHSM2_CONF;
    else process.env.SOFTHSM2_CONF = savedConf;
    await rm(dir, { recursive: true, force: true });
  }
  return results;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of await benchPkcs11()) {
    console.log(
      `${r.name.padEnd(32)} ${String(r.value).padStart(10)} ${r.unit}${r.note ? `  (${r.note})` : ''}`,
    );
  }
}
