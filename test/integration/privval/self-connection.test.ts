/**
 * A dial to a loopback port nobody listens on can connect to itself when the kernel picks the
 * destination port as the source port. The test dials a free even port of the ephemeral range
 * (connect() prefers even ports) until that happens (measured: 0.3-4 s, bounded at 60 s), then
 * checks the socket blocks the validator's listen, is recognised, and is dropped so the port is
 * free at once. Binding the source port by hand would not do: such a socket has SO_REUSEADDR and
 * does not block a listener, while the kernel-chosen one in CI did.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import { isSelfConnection, refuseSelfConnection } from '../../../src/privval/self-connection.ts';

function connect(opts: net.NetConnectOpts): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(opts);
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

function listen(port: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/** An even port of the ephemeral range that nothing listens on (from a port the kernel picked). */
async function freeEvenPort(): Promise<number> {
  for (;;) {
    const picked = await listen(0);
    const addr = picked.address();
    await new Promise((resolve) => picked.close(resolve));
    assert.ok(addr !== null && typeof addr === 'object');
    const port = addr.port & ~1;
    const probe = await listen(port).catch(() => undefined);
    if (probe === undefined) continue;
    await new Promise((resolve) => probe.close(resolve));
    return port;
  }
}

/** Dials a closed port until the kernel connects the socket to itself; fails after `withinMs`. */
async function dialUntilSelfConnected(withinMs: number): Promise<net.Socket> {
  const port = await freeEvenPort();
  const deadline = Date.now() + withinMs;
  let dials = 0;
  while (Date.now() < deadline) {
    dials++;
    const socket = await connect({ host: '127.0.0.1', port }).catch(() => undefined);
    if (socket === undefined) continue;
    if (isSelfConnection(socket)) return socket;
    socket.destroy();
    throw new Error(`something else listens on ${port}`);
  }
  throw new Error(`no self-connection to ${port} in ${dials} dials`);
}

describe('a privval dial that connects to itself', () => {
  test('is refused and frees the port, so the validator can listen on it', async () => {
    const self = await dialUntilSelfConnected(60_000);
    const port = self.localPort ?? 0;
    assert.equal(isSelfConnection(self), true);
    // While the self-connected socket lives, the validator cannot bind its own port.
    await assert.rejects(listen(port), /EADDRINUSE/);
    assert.throws(
      () => refuseSelfConnection(self),
      /connected to itself: nothing listens on 127\.0\.0\.1:\d+/,
    );
    assert.equal(self.destroyed, true);
    const validator = await listen(port);
    validator.close();
  });

  test('a connection to a real listener is left alone', async () => {
    const server = await listen(0);
    const addr = server.address();
    assert.ok(addr !== null && typeof addr === 'object');
    const socket = await connect({ host: '127.0.0.1', port: addr.port });
    assert.equal(isSelfConnection(socket), false);
    refuseSelfConnection(socket);
    assert.equal(socket.destroyed, false);
    socket.destroy();
    server.close();
  });
});
