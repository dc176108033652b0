/**
 * Privval transport benchmarks: round-trip time of a Ping and of a sign request (in-memory
 * ed25519 handler) through the KMS dialer + session, over SecretConnection (tcp) and over a
 * unix socket, and raw SecretConnection throughput in frames per second.
 *
 * Runs standalone: `node --import tsx bench/privval.bench.ts`.
 */

import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { ed25519 } from '@noble/curves/ed25519.js';
import pino from 'pino';
import { zeroVote } from '../src/cometbft/messages.ts';
import type { PrivvalMessage, ProtocolVersion } from '../src/cometbft/types.ts';
import { ValidatorDialer } from '../src/privval/dialer.ts';
import { nodeIdFromPubKey, type TransportIdentity } from '../src/privval/identity.ts';
import { InMemorySigningHandler } from '../src/privval/memory-handler.ts';
import { secretHandshake } from '../src/privval/secret-connection.ts';
import { SignerLink } from '../src/simulator/link.ts';
import { percentile } from '../src/simulator/simulator.ts';
import type { BenchResult } from './types.ts';

const VERSION: ProtocolVersion = 'v0.38';
const CHAIN = 'bench-chain';
const WARMUP = 200;
const ROUND_TRIPS = 3000;
const THROUGHPUT_BYTES = 16 * 1024 * 1024;

function identity(): TransportIdentity {
  const seed = new Uint8Array(randomBytes(32));
  const publicKey = ed25519.getPublicKey(seed);
  return { seed, publicKey, nodeId: nodeIdFromPubKey(publicKey) };
}

/** A node-side listener with the KMS dialer connected to it; `link` sends requests. */
async function connectPair(transport: 'tcp' | 'unix', dir: string) {
  const server = net.createServer();
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  if (transport === 'tcp') await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  else await new Promise<void>((r) => server.listen(join(dir, 'bench.sock'), r));
  const a = server.address();
  const addr = typeof a === 'string' ? `unix://${a}` : `tcp://127.0.0.1:${a?.port}`;
  const handler = new InMemorySigningHandler({
    chainId: CHAIN,
    version: VERSION,
    privateKey: new Uint8Array(32).fill(1),
  });
  const dialer = new ValidatorDialer({
    addr,
    version: VERSION,
    identity: identity(),
    handler,
    logger: pino({ level: 'silent' }),
  });
  dialer.start();
  const socket = await accepted;
  socket.setNoDelay(true);
  const stream: Duplex =
    transport === 'tcp' ? await secretHandshake(socket, new Uint8Array(randomBytes(32))) : socket;
  const link = new SignerLink(stream, VERSION, (what) => {
    throw new Error(`protocol violation: ${what}`);
  });
  const close = async (): Promise<void> => {
    link.close();
    await dialer.stop();
    await new Promise<void>((r) => server.close(() => r()));
  };
  return { link, close };
}

/** Round-trip times in ms of `count` requests made by `make(i)`, after a warm-up. */
async function roundTrips(
  link: SignerLink,
  make: (i: number) => PrivvalMessage,
  count: number,
): Promise<number[]> {
  for (let i = 0; i < WARMUP; i++) await link.request(make(i), 5000);
  const times: number[] = [];
  for (let i = WARMUP; i < WARMUP + count; i++) {
    const msg = make(i);
    const t0 = performance.now();
    await link.request(msg, 5000);
    times.push(performance.now() - t0);
  }
  return times.sort((x, y) => x - y);
}

/** Prevotes at increasing heights, so every request is a fresh signature. */
function signRequest(i: number): PrivvalMessage {
  const vote = {
    ...zeroVote(),
    type: 1,
    height: BigInt(i + 1),
    timestamp: { seconds: 1_700_000_000n, nanos: 0 },
  };
  return { kind: 'signVoteRequest', vote, chainId: CHAIN, skipExtensionSigning: false };
}

/** Plaintext frames per second through one SecretConnection over loopback tcp. */
async function secretConnectionFramesPerSecond(): Promise<number> {
  const server = net.createServer();
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const client = net.connect({ host: '127.0.0.1', port });
  const [a, b] = await Promise.all([
    secretHandshake(client, new Uint8Array(randomBytes(32))),
    accepted.then((s) => secretHandshake(s, new Uint8Array(randomBytes(32)))),
  ]);
  const chunk = new Uint8Array(64 * 1024).fill(7);
  let received = 0;
  const done = new Promise<void>((resolve) => {
    b.on('data', (c: Uint8Array) => {
      received += c.length;
      if (received >= THROUGHPUT_BYTES) resolve();
    });
  });
  const t0 = performance.now();
  for (let sent = 0; sent < THROUGHPUT_BYTES; sent += chunk.length) {
    if (!a.write(chunk)) await new Promise((r) => a.once('drain', r));
  }
  await done;
  const seconds = (performance.now() - t0) / 1000;
  a.destroy();
  b.destroy();
  await new Promise<void>((r) => server.close(() => r()));
  return THROUGHPUT_BYTES / 1024 / seconds;
}

/** Runs the privval benchmarks. */
export async function benchPrivval(): Promise<BenchResult[]> {
  const dir = await mkdtemp(join(tmpdir(), 'ckms-bench-'));
  const results: BenchResult[] = [];
  try {
    for (const transport of ['tcp', 'unix'] as const) {
      const label = transport === 'tcp' ? 'SecretConnection' : 'unix socket';
      const { link, close } = await connectPair(transport, dir);
      try {
        const pings = await roundTrips(link, () => ({ kind: 'pingRequest' }), ROUND_TRIPS);
        const signs = await roundTrips(link, signRequest, ROUND_TRIPS);
        const note = `${ROUND_TRIPS} sequential requests over ${label}, dialer + session + in-memory ed25519 handler`;
        results.push(
          { name: `privval.ping.rtt.p50.${transport}`, unit: 'ms', value: percentile(pings, 0.5), note },
          { name: `privval.ping.rtt.p99.${transport}`, unit: 'ms', value: percentile(pings, 0.99), note },
          { name: `privval.sign.rtt.p50.${transport}`, unit: 'ms', value: percentile(signs, 0.5), note },
          { name: `privval.sign.rtt.p99.${transport}`, unit: 'ms', value: percentile(signs, 0.99), note },
        );
      } finally {
        await close();
      }
    }
    results.push({
      name: 'privval.secretconnection.frames_per_second',
      unit: 'frames/s',
      value: await secretConnectionFramesPerSecond(),
      note: `${THROUGHPUT_BYTES / 1024 / 1024} MiB one way over loopback tcp, 1024-byte frames`,
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return results;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of await benchPrivval()) {
    process.stdout.write(`${r.name.padEnd(46)} ${r.value.toFixed(3).padStart(12)} ${r.unit}\n`);
  }
}
