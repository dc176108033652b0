/**
 * A loopback TCP proxy the harness puts on every link it may want to cut: KMS node → etcd
 * member, KMS node → sentry, follower → leader forward port. Traffic never leaves 127.0.0.1.
 *
 * Modes, switchable at any moment:
 *   open      bytes flow both ways (after `delayMs`, if set)
 *   blocked   both ways cut: every connection is reset and new ones are refused at once
 *   oneway    one direction is held (not forwarded: like a firewall dropping packets one
 *             way, TCP sees silence), the other flows
 * Held bytes are delivered, in order, on heal: TCP retransmits what a partition dropped, so a
 * stream never loses bytes in its middle (discarding them, as this proxy once did, cut HTTP/2
 * frames in half and left gRPC connections waiting for a SETTINGS frame that no real network
 * loses). A request held through the partition thus reaches etcd late, after its sender's
 * deadline, as a delayed packet would: fencing must turn such a write away. The connections
 * stay, so the endpoints see only what a partition shows them: silence, then their own
 * time-outs.
 */
import net from 'node:net';

export type ProxyMode =
  | { kind: 'open' }
  | { kind: 'blocked' }
  /** `toTarget`: the client's bytes are held; `toClient`: the target's replies are held */
  | { kind: 'oneway'; held: Direction };

interface Pair {
  client: net.Socket;
  target: net.Socket;
  /** bytes held by a one-way cut, per direction, delivered on heal */
  held: Record<Direction, Buffer[]>;
}

type Direction = 'toTarget' | 'toClient';

export class TcpProxy {
  private server: net.Server | undefined;
  private readonly pairs = new Set<Pair>();
  private modeNow: ProxyMode = { kind: 'open' };
  /** added latency per chunk, each direction */
  delayMs = 0;

  private constructor(
    readonly name: string,
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  /**
   * Starts a proxy to `target` ("host:port") on `listen` (default: 127.0.0.1, a random port;
   * the chaos etcd bed gives each pair of members its own loopback address).
   */
  static async start(
    name: string,
    target: string,
    listen: { host: string; port: number } = { host: '127.0.0.1', port: 0 },
  ): Promise<TcpProxy> {
    const i = target.lastIndexOf(':');
    const p = new TcpProxy(name, target.slice(0, i), Number(target.slice(i + 1)));
    const server = net.createServer((c) => p.accept(c));
    server.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(listen.port, listen.host, () => resolve());
    });
    p.server = server;
    return p;
  }

  get port(): number {
    const a = this.server?.address();
    if (a === null || a === undefined || typeof a === 'string')
      throw new Error(`proxy ${this.name} is closed`);
    return a.port;
  }

  get address(): string {
    const a = this.server?.address();
    if (a === null || a === undefined || typeof a === 'string')
      throw new Error(`proxy ${this.name} is closed`);
    return `${a.address}:${a.port}`;
  }

  get mode(): ProxyMode {
    return this.modeNow;
  }

  set mode(m: ProxyMode) {
    this.modeNow = m;
    if (m.kind === 'blocked') for (const pair of [...this.pairs]) this.drop(pair);
    // A direction no longer held first delivers what it held, so bytes stay in order.
    for (const pair of this.pairs) {
      if (m.kind !== 'oneway' || m.held !== 'toTarget') this.release(pair, pair.target, 'toTarget');
      if (m.kind !== 'oneway' || m.held !== 'toClient') this.release(pair, pair.client, 'toClient');
    }
  }

  /** Back to open, no delay; bytes held by a one-way cut go on, in order. */
  heal(): void {
    this.delayMs = 0;
    this.mode = { kind: 'open' };
  }

  async close(): Promise<void> {
    for (const pair of [...this.pairs]) this.drop(pair);
    const s = this.server;
    this.server = undefined;
    if (s !== undefined) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    client.on('error', () => {});
    if (this.modeNow.kind === 'blocked') {
      client.resetAndDestroy();
      return;
    }
    client.setNoDelay(true);
    const target = net.connect(this.targetPort, this.targetHost);
    target.on('error', () => {});
    target.setNoDelay(true);
    const pair: Pair = { client, target, held: { toTarget: [], toClient: [] } };
    this.pairs.add(pair);
    this.pipe(pair, client, target, 'toTarget');
    this.pipe(pair, target, client, 'toClient');
    const end = (): void => this.drop(pair);
    client.once('close', end);
    target.once('close', end);
  }

  private pipe(pair: Pair, from: net.Socket, to: net.Socket, dir: Direction): void {
    from.on('data', (chunk: Buffer) => {
      const m = this.modeNow;
      if (m.kind === 'blocked') return;
      if (m.kind === 'oneway' && m.held === dir) {
        pair.held[dir].push(chunk);
        return;
      }
      if (this.delayMs > 0) {
        from.pause();
        setTimeout(() => {
          if (!to.destroyed) to.write(chunk);
          from.resume();
        }, this.delayMs);
      } else if (!to.destroyed) {
        to.write(chunk);
      }
    });
  }

  private release(pair: Pair, to: net.Socket, dir: Direction): void {
    const chunks = pair.held[dir].splice(0);
    for (const chunk of chunks) if (!to.destroyed) to.write(chunk);
  }

  private drop(pair: Pair): void {
    if (!this.pairs.delete(pair)) return;
    reset(pair.client);
    reset(pair.target);
  }
}

/**
 * Resets `s` (RST), or only destroys it once it is shutting down or still connecting. In Node 20
 * a reset of a socket whose write side is already shut (ended after its peer's FIN) fails, and
 * the socket's handle is then left neither open nor closing: the process spins forever at exit
 * waiting for it. Seen in the chaos CI tier: its process hung at 100% CPU after its last test,
 * with four TCP handles in that state (libuv's handle list, read with gdb).
 */
function reset(s: net.Socket): void {
  if (s.destroyed) return;
  if (s.connecting || s.writableEnded) s.destroy();
  else s.resetAndDestroy();
}
