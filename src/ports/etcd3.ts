/**
 * The production {@link EtcdPort}: a thin adapter over the etcd3 client. It only translates
 * shapes (etcd3's compares, ops and key-values to the port's); deadlines, retries and reconnects
 * are the client's (cluster/etcd-client.ts). The one piece of logic here is the single keepalive,
 * which etcd3 offers only as a stream.
 */
import type { Etcd3, ICompare, IKeyValue, IRangeResponse, IRequestOp } from 'etcd3';
import type { EtcdKv, EtcdOp, EtcdPort, EtcdTxn, EtcdTxnResult, EtcdWatch, KeepaliveAnswer } from './etcd.ts';

/** An etcd3 client, or something that already is a port. */
export type EtcdClientLike = Etcd3 | EtcdPort;

/** `client` as a port (an Etcd3 client is wrapped; a port is returned as it is). */
export function toEtcdPort(client: EtcdClientLike): EtcdPort {
  // An etcd3 client has a `kv` service; a port has none.
  return 'kv' in client ? new Etcd3Port(client) : client;
}

function fromKv(kv: IKeyValue): EtcdKv {
  return {
    key: kv.key.toString(),
    value: kv.value,
    createRevision: kv.create_revision,
    modRevision: kv.mod_revision,
    lease: kv.lease,
  };
}

function toCompare(c: EtcdTxn['compare'][number]): ICompare {
  const key = Buffer.from(c.key);
  switch (c.target) {
    case 'value':
      return { key, target: 'Value', result: 'Equal', value: c.value };
    case 'create':
      return { key, target: 'Create', result: 'Equal', create_revision: c.revision };
    case 'mod':
      return { key, target: 'Mod', result: 'Equal', mod_revision: c.revision };
    case 'lease':
      return { key, target: 'Lease', result: 'Equal', lease: c.lease };
  }
}

function toOp(o: EtcdOp): IRequestOp {
  const key = Buffer.from(o.key);
  switch (o.op) {
    case 'put':
      return { request_put: { key, value: o.value, ...(o.lease === undefined ? {} : { lease: o.lease }) } };
    case 'delete':
      return { request_delete_range: { key } };
    case 'range':
      return { request_range: { key } };
  }
}

/** The etcd3 client as an {@link EtcdPort}. Does not own the client. */
export class Etcd3Port implements EtcdPort {
  constructor(readonly client: Etcd3) {}

  async txn(txn: EtcdTxn): Promise<EtcdTxnResult> {
    const res = await this.client.kv.txn({
      compare: txn.compare.map(toCompare),
      success: txn.success.map(toOp),
      failure: txn.failure.map(toOp),
    });
    const ops = res.succeeded ? txn.success : txn.failure;
    const ranges: Array<EtcdKv | undefined> = [];
    res.responses.forEach((r, i) => {
      if (ops[i]?.op !== 'range') return;
      const kv = (r.response_range as IRangeResponse | undefined)?.kvs[0];
      ranges.push(kv === undefined ? undefined : fromKv(kv));
    });
    return { succeeded: res.succeeded, revision: res.header.revision, ranges };
  }

  async get(key: string): Promise<EtcdKv | undefined> {
    const res = await this.client.kv.range({ key: Buffer.from(key) });
    const kv = res.kvs[0];
    return kv === undefined ? undefined : fromKv(kv);
  }

  async getPrefix(prefix: string): Promise<EtcdKv[]> {
    const res = await this.client.getAll().prefix(prefix).exec();
    return res.kvs.map(fromKv);
  }

  async leaseGrant(ttlS: number): Promise<{ id: string; ttlS: number }> {
    const res = await this.client.leaseClient.leaseGrant({ TTL: ttlS });
    return { id: res.ID, ttlS: Number(res.TTL) };
  }

  async leaseRevoke(id: string): Promise<void> {
    await this.client.leaseClient.leaseRevoke({ ID: id });
  }

  /** One keepalive on this client's own stream, bounded by its deadline. */
  async leaseKeepAliveOnce(id: string, timeoutMs: number): Promise<KeepaliveAnswer> {
    const deadline = Date.now() + timeoutMs;
    try {
      const stream = await this.client.leaseClient.leaseKeepAlive({ deadline });
      return await new Promise((resolve) => {
        let done = false;
        const finish = (r: KeepaliveAnswer) => {
          if (done) return;
          done = true;
          clearTimeout(guard);
          stream.cancel();
          resolve(r);
        };
        // the gRPC deadline ends the stream; this is a backstop in case no status arrives
        const guard = setTimeout(() => finish('failed'), timeoutMs + 50);
        stream.on('data', (res) => finish(res.TTL === '0' ? 'not-found' : 'ok'));
        stream.on('error', () => finish('failed'));
        stream.write({ ID: id });
      });
    } catch {
      return 'failed';
    }
  }

  watch(
    target: { key: string } | { prefix: string },
    handlers: { put(kv: EtcdKv): void; delete(kv: EtcdKv): void; error(err: unknown): void },
  ): EtcdWatch {
    const builder = this.client.watch();
    const watcher = ('key' in target ? builder.key(target.key) : builder.prefix(target.prefix))
      .watcher()
      .on('put', (kv) => handlers.put(fromKv(kv)))
      .on('delete', (kv) => handlers.delete(fromKv(kv)))
      .on('error', (err) => handlers.error(err));
    return { cancel: () => watcher.cancel() };
  }
}
