import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Duplex, Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { ed25519 } from '@noble/curves/ed25519.js';
import pino from 'pino';
import { encodeUvarint, lengthPrefixed } from '../../../src/cometbft/framing.ts';
import { encodeMessage, zeroVote } from '../../../src/cometbft/messages.ts';
import type { PrivvalMessage } from '../../../src/cometbft/types.ts';
import { ValidatorDialer } from '../../../src/privval/dialer.ts';
import type { RequestHandler } from '../../../src/privval/handler.ts';
import { nodeIdFromPubKey, type TransportIdentity } from '../../../src/privval/identity.ts';
import { InMemorySigningHandler } from '../../../src/privval/memory-handler.ts';
import { secretHandshake } from '../../../src/privval/secret-connection.ts';
import { Rng } from '../../../src/simulator/rng.ts';
import { ValidatorSimulator } from '../../../src/simulator/simulator.ts';

const CHAIN = 'hostile-chain';
const PING = Uint8Array.from([0x02, 0x3a, 0x00]);
const PONG = [0x02, 0x42, 0x00];
/** Handle kinds whose count must return to the baseline after everything is stopped. */
const TRACKED = new Set(['TCPSocketWrap', 'TCPServerWrap', 'PipeWrap', 'PipeServerWrap', 'Timeout']);

function resources(): string {
  return process
    .getActiveResourcesInfo()
    .filter((r) => TRACKED.has(r))
    .sort()
    .join(',');
}

/** Waits (bounded) for the tracked handles to return to `baseline`, then asserts it. */
async function assertBackToBaseline(baseline: string): Promise<void> {
  const deadline = Date.now() + 3000;
  while (resources() !== baseline && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(resources(), baseline, 'sockets or timers leaked');
}

function identity(): TransportIdentity {
  const seed = new Uint8Array(randomBytes(32));
  const publicKey = ed25519.getPublicKey(seed);
  return { seed, publicKey, nodeId: nodeIdFromPubKey(publicKey) };
}

/** Collects pino lines in memory. */
function captureLogger(): { logger: pino.Logger; lines: { msg: string }[] } {
  const lines: { msg: string }[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines };
}

/** A hand-driven "node": a raw listener whose accepted sockets the test takes one by one. */
class RawNode {
  readonly server: net.Server;
  readonly sockets: net.Socket[] = [];
  private readonly queue: net.Socket[] = [];
  private waiters: ((s: net.Socket) => void)[] = [];

  constructor(onAccept?: (s: net.Socket) => void) {
    this.server = net.createServer((s) => {
      s.on('error', () => {});
      this.sockets.push(s);
      if (onAccept) onAccept(s);
      const w = this.waiters.shift();
      if (w) w(s);
      else this.queue.push(s);
    });
  }

  async listen(addr: { port: number } | { path: string }): Promise<string> {
    await new Promise<void>((resolve) => {
      if ('path' in addr) this.server.listen(addr.path, resolve);
      else this.server.listen(addr.port, '127.0.0.1', resolve);
    });
    const a = this.server.address();
    return typeof a === 'string' ? `unix://${a}` : `tcp://127.0.0.1:${a?.port}`;
  }

  /** The next accepted socket (bounded wait). */
  next(timeoutMs = 5000): Promise<net.Socket> {
    const s = this.queue.shift();
    if (s) return Promise.resolve(s);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no connection from the dialer')), timeoutMs);
      this.waiters.push((sock) => {
        clearTimeout(timer);
        resolve(sock);
      });
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Reads exactly `n` bytes from a stream (bounded wait). */
function readBytes(stream: Duplex, n: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const got: number[] = [];
    const timer = setTimeout(
      () => reject(new Error(`timed out waiting for ${n} bytes, got ${got.length}`)),
      5000,
    );
    const onData = (chunk: Uint8Array): void => {
      got.push(...chunk);
      if (got.length >= n) {
        clearTimeout(timer);
        stream.removeListener('data', onData);
        resolve(got);
      }
    };
    stream.on('data', onData);
  });
}

/** Resolves when the dialer has closed `socket` (its data is discarded so that EOF is seen). */
function closed(socket: net.Socket): Promise<void> {
  socket.resume();
  return socket.destroyed
    ? Promise.resolve()
    : new Promise((resolve) => socket.once('close', () => resolve()));
}

function makeDialer(
  addr: string,
  handler: RequestHandler,
  logger = pino({ level: 'silent' }),
): ValidatorDialer {
  return new ValidatorDialer({
    addr,
    version: 'v0.38',
    identity: identity(),
    handler,
    logger,
    handshakeTimeoutMs: 300,
    backoff: { initialMs: 10, maxMs: 50 },
  });
}

const memory = (): InMemorySigningHandler =>
  new InMemorySigningHandler({
    chainId: CHAIN,
    version: 'v0.38',
    privateKey: new Uint8Array(randomBytes(32)),
  });

describe('dialer and session against hostile peers', () => {
  let dir: string;
  let n = 0;
  const sockPath = () => join(dir, `n${n++}.sock`);
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ckms-hostile-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('unix: answers a request sent one byte at a time, and coalesced requests in order', async () => {
    const baseline = resources();
    const node = new RawNode();
    const dialer = makeDialer(await node.listen({ path: sockPath() }), memory());
    dialer.start();
    const s = await node.next();
    for (const b of PING) {
      s.write(Uint8Array.of(b));
      await new Promise((r) => setImmediate(r));
    }
    assert.deepEqual(await readBytes(s, 3), PONG);
    s.write(Buffer.concat([PING, PING, PING]));
    assert.deepEqual(await readBytes(s, 9), [...PONG, ...PONG, ...PONG]);
    assert.equal(dialer.connected, true);
    await dialer.stop();
    assert.equal(dialer.connected, false);
    await node.close();
    await assertBackToBaseline(baseline);
  });

  it('tcp: answers fragmented and coalesced requests inside SecretConnection', async () => {
    const baseline = resources();
    const node = new RawNode();
    const dialer = makeDialer(await node.listen({ port: 0 }), memory());
    dialer.start();
    const conn = await secretHandshake(await node.next(), new Uint8Array(randomBytes(32)));
    conn.on('error', () => {});
    for (const b of PING) conn.write(Uint8Array.of(b)); // three separate SecretConnection frames
    assert.deepEqual(await readBytes(conn, 3), PONG);
    conn.write(Buffer.concat([PING, PING]));
    assert.deepEqual(await readBytes(conn, 6), [...PONG, ...PONG]);
    assert.equal(dialer.status.remoteNodeId, nodeIdFromPubKey(conn.localPubKey));
    await dialer.stop();
    conn.destroy();
    await node.close();
    await assertBackToBaseline(baseline);
  });

  it('closes the connection on an oversize length prefix and reconnects', async () => {
    const baseline = resources();
    const node = new RawNode();
    const dialer = makeDialer(await node.listen({ path: sockPath() }), memory());
    dialer.start();
    const first = await node.next();
    first.write(encodeUvarint(2 * 1024 * 1024));
    await closed(first);
    const second = await node.next();
    second.write(PING);
    assert.deepEqual(await readBytes(second, 3), PONG);
    await dialer.stop();
    await node.close();
    await assertBackToBaseline(baseline);
  });

  it('gives up on a node that stalls mid-handshake, re-dials, and stops cleanly while stalled', async () => {
    const baseline = resources();
    // Half an ephemeral-key message, then silence.
    const node = new RawNode((s) => s.write(Uint8Array.from([0x22, 0x0a, 0x20, 1, 2, 3])));
    const dialer = makeDialer(await node.listen({ port: 0 }), memory());
    dialer.start();
    const first = await node.next();
    await closed(first);
    await node.next();
    assert.equal(dialer.connected, false);
    assert.equal(dialer.status.connects, 0);
    assert.match(dialer.status.lastError ?? '', /time/);
    await dialer.stop();
    await node.close();
    await assertBackToBaseline(baseline);
  });

  it('survives a connection dropped mid-request and serves the next connection', async () => {
    const baseline = resources();
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let started!: () => void;
    const handlerStarted = new Promise<void>((r) => {
      started = r;
    });
    const inner = memory();
    const handler: RequestHandler = {
      async handle(req: PrivvalMessage) {
        started();
        await gate;
        return inner.handle(req);
      },
    };
    const node = new RawNode();
    const dialer = makeDialer(await node.listen({ path: sockPath() }), handler);
    const disconnects: string[] = [];
    dialer.on('disconnect', (info) => disconnects.push(info.reason));
    dialer.start();
    const first = await node.next();
    const request: PrivvalMessage = {
      kind: 'signVoteRequest',
      vote: { ...zeroVote(), type: 1, height: 1n },
      chainId: CHAIN,
      skipExtensionSigning: false,
    };
    first.write(lengthPrefixed(encodeMessage(request, 'v0.38')));
    await handlerStarted;
    first.destroy();
    release();
    const second = await node.next();
    second.write(PING);
    assert.deepEqual(await readBytes(second, 3), PONG);
    assert.equal(disconnects.length, 1);
    await dialer.stop();
    await node.close();
    await assertBackToBaseline(baseline);
  });

  it('drops a flood of garbage (unix and tcp) and reconnects', async () => {
    const baseline = resources();
    const rng = new Rng(1234);
    for (const addr of [{ path: sockPath() }, { port: 0 }]) {
      const node = new RawNode();
      const dialer = makeDialer(await node.listen(addr), memory());
      dialer.start();
      const first = await node.next();
      first.on('data', () => {}); // whatever the dialer answers is ignored
      for (let i = 0; i < 64 && !first.destroyed; i++) first.write(rng.bytes(4096));
      await closed(first);
      await node.next();
      await dialer.stop();
      await node.close();
    }
    await assertBackToBaseline(baseline);
  });

  it('retries a listener that closes at once, logging the failure once, then connects to a real one', async () => {
    const baseline = resources();
    const { logger, lines } = captureLogger();
    const node = new RawNode((s) => s.destroy());
    const addr = await node.listen({ port: 0 });
    const dialer = makeDialer(addr, memory(), logger);
    dialer.start();
    for (let i = 0; i < 6; i++) await node.next();
    assert.equal(dialer.status.connects, 0);
    assert.equal(dialer.connected, false);
    await node.close();
    const sim = new ValidatorSimulator({
      listen: addr,
      chainId: CHAIN,
      protocol: 'v0.38',
      blockTimeMs: 0,
      heights: 2,
      logger: pino({ level: 'silent' }),
    });
    await sim.listen();
    assert.equal(await sim.waitForSigner(5000), true);
    const summary = await sim.run();
    assert.equal(summary.heightsCompleted, 2);
    assert.equal(summary.invalidSignatures, 0);
    await dialer.stop();
    await sim.close();
    // Six or more failed dials, but one "cannot connect" line; one connect and one disconnect line.
    assert.equal(lines.filter((l) => l.msg === 'cannot connect to validator; retrying').length, 1);
    assert.equal(lines.filter((l) => l.msg === 'connected to validator').length, 1);
    assert.equal(lines.filter((l) => l.msg === 'disconnected from validator').length, 1);
    await assertBackToBaseline(baseline);
  });

  it('reconnects to a simulator restarted on the same tcp address', async () => {
    const baseline = resources();
    const opts = {
      chainId: CHAIN,
      protocol: 'v0.38' as const,
      blockTimeMs: 0,
      heights: 3,
      logger: pino({ level: 'silent' }),
    };
    const first = new ValidatorSimulator({ listen: 'tcp://127.0.0.1:0', ...opts });
    const addr = await first.listen();
    const dialer = makeDialer(addr, memory());
    const connects: string[] = [];
    dialer.on('connect', (info) => connects.push(info.remoteNodeId ?? ''));
    dialer.start();
    assert.equal((await first.run()).heightsCompleted, 3);
    await first.close();
    const second = new ValidatorSimulator({ listen: addr, ...opts, startHeight: 4n });
    await second.listen();
    assert.equal(await second.waitForSigner(5000), true, 'reconnected within 5 s');
    const summary = await second.run();
    assert.equal(summary.heightsCompleted, 3);
    assert.equal(summary.doubleSigns, 0);
    assert.equal(dialer.status.connects, 2);
    // The restarted node has a fresh SecretConnection identity.
    assert.equal(connects.length, 2);
    assert.notEqual(connects[0], connects[1]);
    await dialer.stop();
    await second.close();
    await assertBackToBaseline(baseline);
  });
});
