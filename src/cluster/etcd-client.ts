import { ConstantBackoff, handleWhen, type IBackoff, noop, retry } from 'cockatiel';
import { Etcd3, type IOptions, isRecoverableError } from 'etcd3';

/** What is needed to reach the etcd cluster (the `[cluster]` section, secrets already read). */
export interface EtcdClientOptions {
  /** `http://host:port` or `https://host:port`; all of one scheme */
  endpoints: string[];
  /** deadline of one unary call attempt */
  callTimeoutMs: number;
  username?: string;
  password?: string;
  /** required when the endpoints are https:// */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
}

/**
 * The clients of one node: `client` spreads calls over all members; `members[i]` talks only to
 * `endpoints[i]` (the lease keepalive is sent to every member at once, so that one frozen or
 * partitioned member cannot make us lose the lease).
 */
export interface EtcdClients {
  client: Etcd3;
  members: Etcd3[];
  close(): void;
}

/**
 * Retries after the first failed attempt of a call. Each retry goes to the next member, so with a
 * dead or frozen member a call still succeeds within (1 + RETRIES) × callTimeoutMs.
 */
const RETRIES = 2;

/**
 * gRPC pings must stay above etcd's `--grpc-keepalive-min-time` (5 s by default), else etcd
 * closes the connection. Unary calls do not need pings (they have deadlines); they only help
 * long-lived watch streams notice a dead member.
 */
const GRPC_KEEPALIVE_MS = 10_000;

/**
 * Watch reconnect delays 50, 100, 200 … 1000 ms: a follower's leader-key watch must come back
 * quickly after an etcd election. (etcd3 calls `next()` before the first wait.)
 */
class WatchBackoff implements IBackoff<unknown> {
  constructor(readonly duration: number) {}
  next(): WatchBackoff {
    return new WatchBackoff(Math.min(this.duration * 2, 1000));
  }
}

/** Builds the etcd3 options with the settings measured to be safe (see each comment). */
export function etcdClientOptions(opts: EtcdClientOptions, endpoints = opts.endpoints): IOptions {
  if (endpoints.length === 0) throw new Error('cluster: etcd_endpoints is empty');
  const secure = endpoints.map((e) => e.startsWith('https://'));
  if (secure.some((s) => s !== secure[0])) {
    throw new Error('cluster: etcd_endpoints mix http:// and https://; use one scheme for all');
  }
  for (const e of endpoints) {
    if (!/^https?:\/\/[^/]+$/.test(e)) {
      throw new Error(`cluster: etcd endpoint "${e}" must look like http://host:port or https://host:port`);
    }
  }
  const options: IOptions = {
    hosts: endpoints,
    // Without a deadline a call to a killed Raft leader or a frozen member hangs for seconds.
    // Streams (watch, keepalive) get no default deadline: the watch lives forever and the
    // keepalive sets its own.
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + opts.callTimeoutMs }),
    faultHandling: {
      // No per-member circuit breaker: during an etcd election every member fails once, and
      // breakers that opened on all members kept the client down long after etcd recovered.
      host: () => noop,
      // Transactions are compare-and-set, so retrying one whose reply was lost is safe: the
      // retry's compare fails and the caller reads what is there.
      global: retry(handleWhen(isRecoverableError), {
        maxAttempts: RETRIES,
        backoff: new ConstantBackoff(10),
      }),
      watchBackoff: new WatchBackoff(25),
    },
    grpcOptions: {
      'grpc.keepalive_time_ms': GRPC_KEEPALIVE_MS,
      'grpc.keepalive_timeout_ms': 2_000,
      // a restarted member is used again within a second
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1_000,
    },
  };
  if (secure[0]) {
    if (!opts.tls)
      throw new Error('cluster: https:// etcd endpoints need tls_ca_file (and a client cert/key)');
    options.credentials = {
      rootCertificate: opts.tls.ca,
      privateKey: opts.tls.key,
      certChain: opts.tls.cert,
    };
  }
  if (opts.username !== undefined) {
    if (opts.password === undefined)
      throw new Error('cluster: etcd_username is set but no password was given');
    options.auth = { username: opts.username, password: opts.password };
  }
  return options;
}

/** One client over all endpoints, with a per-call deadline and retries on other members. */
export function createEtcdClient(opts: EtcdClientOptions): Etcd3 {
  return new Etcd3(etcdClientOptions(opts));
}

/** The shared client plus one single-member client per endpoint (for lease keepalives). */
export function createEtcdClients(opts: EtcdClientOptions): EtcdClients {
  const client = createEtcdClient(opts);
  const members = opts.endpoints.map((e) => new Etcd3(etcdClientOptions(opts, [e])));
  return {
    client,
    members,
    close() {
      client.close();
      for (const m of members) m.close();
    },
  };
}
