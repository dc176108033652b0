/**
 * The chaos harness's partition proxy does what each mode claims, on real loopback sockets:
 * open forwards both ways, blocked resets live connections and refuses new ones, one way holds
 * exactly one direction and delivers it in order on heal, delay delays, heal restores.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { TcpProxy } from '../../chaos/harness/net/proxy.ts';

/** An echo server that also announces itself to every new client. */
let server: net.Server;
let proxy: TcpProxy;
const serverSockets = new Set<net.Socket>();

before(async () => {
  server = net.createServer((s) => {
    serverSockets.add(s);
    s.on('error', () => {});
    s.on('close', () => serverSockets.delete(s));
    s.on('data', (d) => s.write(d));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  proxy = await TcpProxy.start('test', `127.0.0.1:${port}`);
});

after(async () => {
  await proxy.close();
  for (const s of serverSockets) s.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function connect(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const c = net.connect(proxy.port, '127.0.0.1', () => resolve(c));
    c.once('error', reject);
  });
}

/** Sends `text` and resolves with what comes back within `ms` ('' if nothing; 'closed' on close). */
function roundTrip(c: net.Socket, text: string, ms = 300): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const done = (v: string): void => {
      clearTimeout(timer);
      c.off('data', onData);
      resolve(v);
    };
    const onData = (d: Buffer): void => {
      got += d.toString();
      if (got === text) done(got);
    };
    const timer = setTimeout(() => done(got), ms);
    c.on('data', onData);
    c.once('close', () => done(got === '' ? 'closed' : got));
    c.write(text);
  });
}

describe('partition proxy', () => {
  it('forwards both ways while open', async () => {
    const c = await connect();
    assert.equal(await roundTrip(c, 'hello'), 'hello');
    c.destroy();
  });

  it('blocked: resets live connections and refuses new ones; heal restores', async () => {
    const c = await connect();
    c.on('error', () => {});
    assert.equal(await roundTrip(c, 'a'), 'a');
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
    proxy.mode = { kind: 'blocked' };
    await closed;
    const refused = await new Promise<string>((resolve) => {
      const d = net.connect(proxy.port, '127.0.0.1');
      d.on('error', () => resolve('error'));
      d.on('close', () => resolve('closed'));
      d.on('data', () => resolve('data'));
      d.write('x');
    });
    assert.notEqual(refused, 'data');
    proxy.heal();
    const e = await connect();
    assert.equal(await roundTrip(e, 'back'), 'back');
    e.destroy();
  });

  it('one way: holds one direction only, silently, and delivers what it held on heal', async () => {
    const c = await connect();
    proxy.mode = { kind: 'oneway', held: 'toClient' };
    assert.equal(await roundTrip(c, 'one'), '', 'replies are held');
    proxy.heal();
    assert.equal(await roundTrip(c, ''), 'one', 'the held reply arrives on heal, as TCP retransmits it');
    proxy.mode = { kind: 'oneway', held: 'toTarget' };
    assert.equal(await roundTrip(c, 'two'), '', 'requests are held');
    proxy.mode = { kind: 'oneway', held: 'toClient' };
    assert.equal(await roundTrip(c, ''), '', 'a request let through is echoed into the held direction');
    proxy.heal();
    assert.equal(await roundTrip(c, ''), 'two', 'and arrives once that heals');
    assert.equal(await roundTrip(c, 'ok'), 'ok', 'the same connection works on');
    c.destroy();
  });

  it('delays each direction', async () => {
    const c = await connect();
    proxy.delayMs = 150;
    const t0 = Date.now();
    assert.equal(await roundTrip(c, 'slow', 2_000), 'slow');
    assert.ok(Date.now() - t0 >= 250, 'two hops of 150 ms');
    proxy.heal();
    c.destroy();
  });
});
