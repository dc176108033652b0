/**
 * The etcd client options a `[cluster]` section describes, shared by `cometkms start` and the
 * `cometkms state` commands so that both reach etcd exactly the same way.
 */
import { readSecretFile } from '../config/secrets.ts';
import type { ClusterSection } from '../config/types.ts';
import type { EtcdClientOptions } from './etcd-client.ts';
import type { ForwardTls } from './forward.ts';
import { etcdTls } from './tls.ts';

/**
 * Endpoints and call deadline of `cluster`, the etcd user with the password read from
 * `etcd_password_file`, and `tls` (the cluster's CA and node certificate, from
 * `loadClusterTls`) when the endpoints are https://.
 */
export async function clusterEtcdOptions(
  cluster: ClusterSection,
  tls: ForwardTls,
): Promise<EtcdClientOptions> {
  const password =
    cluster.etcd_password_file === undefined
      ? undefined
      : await readSecretFile(cluster.etcd_password_file, 'etcd password');
  const secure = cluster.etcd_endpoints.some((e) => e.startsWith('https://'));
  return {
    endpoints: cluster.etcd_endpoints,
    callTimeoutMs: cluster.etcd_call_timeout_ms,
    ...(cluster.etcd_username === undefined ? {} : { username: cluster.etcd_username }),
    ...(password === undefined ? {} : { password }),
    ...(secure ? { tls: etcdTls(tls) } : {}),
  };
}
