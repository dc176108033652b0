/**
 * Everything a chaos run signs with, started once and kept across rounds: SoftHSM tokens holding
 * one imported validator key, the fault shim, an etcd cluster (cluster mode), the KMS nodes, two
 * sentries per chain, and a TCP proxy on every link a fault may cut:
 *
 *   node i ──proxy(i, sentry)──► sentry        (validator ↔ KMS partitions)
 *   node i ──proxy(i, member)──► etcd member   (KMS ↔ etcd partitions, delay)
 *   followers ──proxy(i)──► node i forward port (follower ↔ leader forward partitions)
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freeLoopbackPort } from '../../../../src/cluster/free-port.ts';
import { formatPrivValidatorKey } from '../../../../src/cometbft/privval-files.ts';
import type { ProtocolVersion } from '../../../../src/cometbft/types.ts';
import { SignRecord } from '../../../../src/simulator/sign-record.ts';
import { ValidatorSimulator } from '../../../../src/simulator/simulator.ts';
import { makeTestCerts, type TestCerts } from '../../../helpers/certs.ts';
import { KmsHome, killAllKms, runCli } from '../../../helpers/kms-process.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../../helpers/softhsm.ts';
import { buildFaultShim, HsmFaults } from '../hsm/stack.ts';
import { TcpProxy } from '../net/proxy.ts';
import { EtcdBed } from './etcd-bed.ts';
import { ChaosNode } from './node.ts';

export const KEY_LABEL = 'chaos-validator';
export const ETCD_PREFIX = '/cometkms/';

export interface ChainSpec {
  id: string;
  protocol: ProtocolVersion;
}

/** Two sentries of one chain: `a` and `b` race conflicting votes at every HRS. */
export interface ChainSentries {
  chain: ChainSpec;
  a: ValidatorSimulator;
  b: ValidatorSimulator;
}

export interface BedOptions {
  runDir: string;
  nodes: 1 | 3 | 5;
  chains: ChainSpec[];
  keySeed: Uint8Array;
}

export class ChaosBed {
  readonly nodes: ChaosNode[] = [];
  readonly sentries: ChainSentries[] = [];
  /** proxies by name: `v:<node>:<sentry>`, `e:<node>:<member>`, `f:<node>` */
  readonly proxies = new Map<string, TcpProxy>();
  etcd: EtcdBed | undefined;
  certs: TestCerts | undefined;
  readonly tokens: SoftHsmToken[] = [];
  shim = '';
  readonly spyDir: string;
  readonly keyFile: string;

  private constructor(readonly opts: BedOptions) {
    this.spyDir = join(opts.runDir, 'spy');
    this.keyFile = join(opts.runDir, 'priv_validator_key.json');
  }

  get mode(): 'single' | 'cluster' {
    return this.opts.nodes === 1 ? 'single' : 'cluster';
  }

  /** Builds and starts everything; on failure tears down what was started. */
  static async start(opts: BedOptions): Promise<ChaosBed> {
    const bed = new ChaosBed(opts);
    try {
      await bed.build();
      return bed;
    } catch (err) {
      await bed.stop();
      throw err;
    }
  }

  proxy(name: string): TcpProxy {
    const p = this.proxies.get(name);
    if (p === undefined) throw new Error(`no proxy ${name}`);
    return p;
  }

  /** Every proxy that carries node i's traffic of `kind` (v validators, e etcd). */
  nodeProxies(i: number, kind: 'v' | 'e'): TcpProxy[] {
    return [...this.proxies.entries()].filter(([k]) => k.startsWith(`${kind}:${i}:`)).map(([, p]) => p);
  }

  /** Index of the node whose /status says it leads with a signing session (-1: none within `ms`). */
  async leader(ms = 10_000): Promise<number> {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      for (const n of this.nodes) {
        const s = await n.status();
        if (s?.role === 'leader' && s.hsm.signing_session) return n.index;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return -1;
  }

  private async build(): Promise<void> {
    const { runDir } = this.opts;
    await mkdir(this.spyDir, { recursive: true });
    this.shim = await buildFaultShim(runDir);
    await writeFile(this.keyFile, formatPrivValidatorKey('ed25519', this.opts.keySeed), { mode: 0o600 });
    for (const chain of this.opts.chains) {
      const record = new SignRecord();
      const sentry = (): ValidatorSimulator =>
        new ValidatorSimulator({
          listen: 'tcp://127.0.0.1:0',
          chainId: chain.id,
          protocol: chain.protocol,
          blockTimeMs: 0,
          heights: 0,
          requestTimeoutMs: 2_000,
          record,
        });
      const s = { chain, a: sentry(), b: sentry() };
      await s.a.listen();
      await s.b.listen();
      this.sentries.push(s);
    }
    const ids = Array.from({ length: this.opts.nodes }, (_, i) => `kms-${i + 1}`);
    if (this.mode === 'cluster') {
      this.etcd = await EtcdBed.start(join(runDir, 'etcd'), this.opts.nodes);
      this.certs = await makeTestCerts('cometkms chaos', ids);
    }
    this.nodes.push(...(await Promise.all(ids.map((id, i) => this.makeNode(i, id)))));
  }

  private wrongPrefix: ChaosNode | undefined;

  /**
   * An extra cluster node configured with another `etcd_prefix` (an operator's mistake): same
   * key, same validators (dialled directly), its own home and token. Made once, on first use.
   */
  async wrongPrefixNode(): Promise<ChaosNode> {
    this.wrongPrefix ??= await this.makeNode(this.opts.nodes, 'kms-wrong-prefix', {
      prefix: '/cometkms-wrong/',
      proxied: false,
      certsOf: 'kms-1',
    });
    return this.wrongPrefix;
  }

  private async makeNode(
    i: number,
    id: string,
    opts: { prefix: string; proxied: boolean; certsOf?: string } = { prefix: ETCD_PREFIX, proxied: true },
  ): Promise<ChaosNode> {
    const token = await createSoftHsmToken({ label: `chaos-${id}` });
    this.tokens.push(token);
    const imported = await runCli(
      [
        'keys',
        'import',
        '--from',
        this.keyFile,
        '--label',
        KEY_LABEL,
        '--module',
        token.modulePath,
        '--token-label',
        token.label,
        '--pin-file',
        token.pinFile,
        '--profile',
        'softhsm2',
      ],
      { ...process.env, ...token.env },
    );
    if (imported.code !== 0) throw new Error(`keys import for ${id} failed: ${imported.stderr}`);
    const validators = new Map<string, string[]>();
    for (const [si, s] of this.sentries.entries()) {
      const addrs: string[] = [];
      for (const [tag, sim] of [
        ['a', s.a],
        ['b', s.b],
      ] as const) {
        if (!opts.proxied) {
          addrs.push(sim.address);
          continue;
        }
        const p = await TcpProxy.start(`v:${i}:${si}${tag}`, sim.address.slice('tcp://'.length));
        this.proxies.set(p.name, p);
        addrs.push(`tcp://${p.address}`);
      }
      validators.set(s.chain.id, addrs);
    }
    let extraToml = '';
    if (this.etcd !== undefined && this.certs !== undefined) {
      const endpoints: string[] = [];
      for (let m = 0; m < this.etcd.size; m++) {
        if (!opts.proxied) {
          endpoints.push(`http://${this.etcd.clientAddress(m)}`);
          continue;
        }
        const p = await TcpProxy.start(`e:${i}:${m}`, this.etcd.clientAddress(m));
        this.proxies.set(p.name, p);
        endpoints.push(`http://${p.address}`);
      }
      const forwardPort = await freeLoopbackPort();
      let advertise = `127.0.0.1:${forwardPort}`;
      if (opts.proxied) {
        const fwd = await TcpProxy.start(`f:${i}`, advertise);
        this.proxies.set(fwd.name, fwd);
        advertise = fwd.address;
      }
      const f = this.certs.files(opts.certsOf ?? id);
      const str = JSON.stringify;
      extraToml =
        '\n[cluster]\n' +
        `etcd_endpoints = ${str(endpoints)}\n` +
        `etcd_prefix = ${str(opts.prefix)}\n` +
        'lease_ttl_s = 1\n' +
        `forward_listen = "127.0.0.1:${forwardPort}"\n` +
        `forward_advertise = ${str(advertise)}\n` +
        `tls_ca_file = ${str(f.caFile)}\ntls_cert_file = ${str(f.certFile)}\ntls_key_file = ${str(f.keyFile)}\n`;
    }
    const home = await KmsHome.create({
      token: { ...token, modulePath: this.shim },
      nodeId: id,
      chains: this.opts.chains.map((c) => ({
        id: c.id,
        keyLabel: KEY_LABEL,
        keyType: 'ed25519' as const,
        protocol: c.protocol,
        validators: validators.get(c.id) ?? [],
      })),
      extraToml,
      // Nothing but the operator's `state init` creates a chain's state (see the runner).
      stateHeight: null,
    });
    const dir = home.dir;
    const hsm = new HsmFaults(join(dir, 'hsm-faults'));
    await hsm.pass();
    // The last node gets the fake clock (one node only: safety must not depend on clocks).
    const clockFile = i === this.opts.nodes - 1 ? join(dir, 'clock-offset') : undefined;
    if (clockFile !== undefined) await writeFile(clockFile, '+0\n');
    return new ChaosNode(i, id, home, hsm, {
      softhsmModule: token.modulePath,
      spyDir: this.spyDir,
      ...(clockFile === undefined ? {} : { clockFile }),
      durable: { image: join(dir, 'durable-image'), enospcFlag: join(dir, 'disk-full') },
    });
  }

  /** Stops every process and removes everything but the run directory. */
  async stop(): Promise<void> {
    await killAllKms();
    for (const n of [...this.nodes, ...(this.wrongPrefix ? [this.wrongPrefix] : [])]) await n.logsWritten();
    await Promise.all(this.sentries.flatMap((s) => [s.a.close(), s.b.close()]));
    await Promise.all([...this.proxies.values()].map((p) => p.close()));
    await this.etcd?.stop();
    for (const n of [...this.nodes, ...(this.wrongPrefix ? [this.wrongPrefix] : [])]) await n.home.cleanup();
    for (const t of this.tokens) await t.cleanup();
    await this.certs?.cleanup();
  }
}
