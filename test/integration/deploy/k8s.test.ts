/**
 * deploy/k8s/cometkms.yaml: CometKMS accepts the secret files its pods get.
 *
 * A Secret volume's files belong to root and reach uid 10001 only through fsGroup with mode
 * 0440, which CometKMS's secret-file check refuses. The manifest's init container copies them to
 * 0600 files of the node user. This test rebuilds the pod's mounts on real files, as the kubelet
 * lays them out (root-owned 0440 files behind `..data` symlinks, an fsGroup-owned emptyDir), runs
 * the init container's own script on them as uid 10001, then runs CometKMS's real checks
 * (readSecretFile, loadClusterTls) as uid 10001 on every secret path of every pod's config. It
 * also shows the same checks refuse the Secret volume as mounted. And the NetworkPolicy admits
 * exactly what the configs need.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, chown, lstat, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { parseConfig } from '../../../src/config/load.ts';
import type { Config } from '../../../src/config/types.ts';

const REPO = join(import.meta.dirname, '../../..');
const MANIFEST = join(REPO, 'deploy/k8s/cometkms.yaml');

/** The keys of the two Secrets, as the manifest's header says to create them. */
const SECRET_KEYS: Record<string, string[]> = {
  'cometkms-secrets': ['hsm.pin', 'admin.token'],
  'cometkms-tls': ['ca.pem', ...[0, 1, 2].flatMap((i) => [`cometkms-${i}.pem`, `cometkms-${i}-key.pem`])],
};

interface Mount {
  name: string;
  mountPath: string;
  subPath?: string;
  readOnly?: boolean;
}
interface Container {
  name: string;
  command?: string[];
  securityContext?: {
    runAsUser?: number;
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
  };
  volumeMounts: Mount[];
}
interface Volume {
  name: string;
  secret?: { secretName: string; defaultMode?: number };
  emptyDir?: { medium?: string };
  configMap?: { name: string };
}
interface PodSpec {
  securityContext: { runAsUser: number; runAsGroup: number; fsGroup: number; runAsNonRoot?: boolean };
  initContainers: Container[];
  containers: Container[];
  volumes: Volume[];
}
interface Port {
  protocol: string;
  port: number;
}
interface Peer {
  podSelector?: { matchLabels: Record<string, string> };
  namespaceSelector?: { matchLabels: Record<string, string> };
  ipBlock?: { cidr: string };
}
interface NetworkPolicy {
  spec: {
    podSelector: { matchLabels: Record<string, string> };
    policyTypes: string[];
    ingress: Array<{ from: Peer[]; ports: Port[] }>;
    egress: Array<{ to: Peer[]; ports: Port[] }>;
  };
}

/** The manifest's documents, read the way Kubernetes reads YAML (1.1: `0440` is octal). */
async function manifest(): Promise<Array<Record<string, unknown>>> {
  const docs = parseAllDocuments(await readFile(MANIFEST, 'utf8'), { version: '1.1' });
  return (Array.isArray(docs) ? docs : [docs]).map((d) => d.toJS() as Record<string, unknown>);
}

function ofKind<T>(docs: Array<Record<string, unknown>>, kind: string): T {
  const doc = docs.find((d) => d['kind'] === kind);
  assert.ok(doc, `no ${kind} in the manifest`);
  return doc as T;
}

/** The pod configs of the ConfigMap, parsed by the real loader. */
function podConfigs(docs: Array<Record<string, unknown>>): Config[] {
  const cm = ofKind<{ data: Record<string, string> }>(docs, 'ConfigMap');
  return Object.entries(cm.data).map(([name, text]) => parseConfig(text, `/etc/cometkms/config/${name}`, {}));
}

/** Every secret file a config names, with what reads it. */
function secretPaths(c: Config): Array<{ path: string; kind: 'secret' | 'tls_ca' | 'tls_cert' | 'tls_key' }> {
  const out: Array<{ path: string; kind: 'secret' | 'tls_ca' | 'tls_cert' | 'tls_key' }> = [];
  if (c.hsm.pin_file) out.push({ path: c.hsm.pin_file, kind: 'secret' });
  if (c.admin.token_file) out.push({ path: c.admin.token_file, kind: 'secret' });
  const cl = c.cluster;
  assert.ok(cl?.tls_ca_file && cl.tls_cert_file && cl.tls_key_file);
  out.push({ path: cl.tls_ca_file, kind: 'tls_ca' });
  out.push({ path: cl.tls_cert_file, kind: 'tls_cert' });
  out.push({ path: cl.tls_key_file, kind: 'tls_key' });
  return out;
}

/** The mount of `c` a path in the container falls under (longest mountPath wins). */
function mountOf(c: Container, path: string): Mount {
  const m = c.volumeMounts
    .filter((v) => path.startsWith(`${v.mountPath}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  assert.ok(m, `${c.name}: nothing is mounted at ${path}`);
  return m;
}

function run(
  cmd: string,
  args: string[],
  opts: { uid: number; gid: number; env?: NodeJS.ProcessEnv; cwd?: string },
): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      {
        uid: opts.uid,
        gid: opts.gid,
        env: opts.env ?? { PATH: process.env['PATH'] },
        cwd: opts.cwd ?? '/',
        timeout: 60_000,
      },
      (err, stdout, stderr) =>
        resolve({
          code: err ? (typeof err.code === 'number' ? err.code : -1) : 0,
          out: `${stdout}${stderr}`,
        }),
    );
  });
}

/**
 * Runs CometKMS's checks as `uid`: readSecretFile on every `secret`, loadClusterTls on the TLS
 * files. Resolves with the process's exit and output (a JSON line, or the error).
 */
function checkAs(
  uid: number,
  gid: number,
  secrets: string[],
  tls: { tls_ca_file: string; tls_cert_file: string; tls_key_file: string },
): Promise<{ code: number; out: string }> {
  const script = `
    import { readSecretFile } from ${JSON.stringify(join(REPO, 'src/config/secrets.ts'))};
    import { loadClusterTls } from ${JSON.stringify(join(REPO, 'src/cluster/tls.ts'))};
    const [secrets, tls] = JSON.parse(process.argv[1]);
    for (const s of secrets) await readSecretFile(s, 'secret');
    await loadClusterTls(tls);
    console.log(JSON.stringify({ ok: true, uid: process.getuid() }));
  `;
  return run(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', script, JSON.stringify([secrets, tls])],
    // From the repository, so that `--import tsx` resolves; the files checked are all elsewhere.
    // tsx's cache goes to TMPDIR: this test's directory, removed with it.
    { uid, gid, env: { PATH: process.env['PATH'], TMPDIR: join(dir, 'tmp') }, cwd: REPO },
  );
}

let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-k8s-'));
  await chmod(dir, 0o755);
  await mkdir(join(dir, 'tmp'), { mode: 0o777 });
  await chmod(join(dir, 'tmp'), 0o1777);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('deploy/k8s/cometkms.yaml secrets', () => {
  test('the pod mounts Secrets only into the init container, and the node reads an in-memory copy', async () => {
    const docs = await manifest();
    const pod = ofKind<{ spec: { template: { spec: PodSpec } } }>(docs, 'StatefulSet').spec.template.spec;
    const init = pod.initContainers.find((c) => c.name === 'secrets');
    const main = pod.containers.find((c) => c.name === 'cometkms');
    assert.ok(init && main);
    const volumes = new Map(pod.volumes.map((v) => [v.name, v]));
    const secretVolumes = pod.volumes.filter((v) => v.secret !== undefined).map((v) => v.name);
    assert.deepEqual(secretVolumes.sort(), ['secrets', 'tls']);
    for (const m of main.volumeMounts)
      assert.ok(!secretVolumes.includes(m.name), `node mounts Secret ${m.name}`);
    for (const name of secretVolumes) assert.ok(init.volumeMounts.some((m) => m.name === name && m.readOnly));
    // Every secret path of every pod config is on the init container's copy, in RAM, read-only.
    for (const c of podConfigs(docs)) {
      for (const { path } of secretPaths(c)) {
        const m = mountOf(main, path);
        assert.equal(m.name, 'private', `${path} must come from the 0600 copy`);
        assert.equal(m.readOnly, true);
        assert.equal(volumes.get(m.name)?.emptyDir?.medium, 'Memory');
      }
    }
    // The init container runs as the node user, unprivileged.
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.equal(init.securityContext?.runAsUser ?? pod.securityContext.runAsUser, 10001);
    assert.equal(init.securityContext?.allowPrivilegeEscalation, false);
    assert.equal(init.securityContext?.readOnlyRootFilesystem, true);
  });

  test('on real files: the Secret volume is refused as mounted, the init container’s copy is accepted', async () => {
    const docs = await manifest();
    const pod = ofKind<{ spec: { template: { spec: PodSpec } } }>(docs, 'StatefulSet').spec.template.spec;
    const { runAsUser: uid, runAsGroup: gid, fsGroup } = pod.securityContext;
    const init = pod.initContainers.find((c) => c.name === 'secrets')!;
    const main = pod.containers.find((c) => c.name === 'cometkms')!;
    const volumeDir = (name: string): string => join(dir, 'volumes', name);

    // Secret volumes as the kubelet writes them: files in a timestamped directory, owned by root
    // with group fsGroup and the volume's defaultMode, reached through `..data` symlinks.
    for (const v of pod.volumes) {
      if (v.secret === undefined) continue;
      const mode = v.secret.defaultMode ?? 0o644;
      assert.equal(mode, 0o440, `${v.name}: defaultMode`);
      const root = volumeDir(v.name);
      const stamp = join(root, '..2025_01_01_00_00_00.000000001');
      await mkdir(stamp, { recursive: true, mode: 0o755 });
      for (const key of SECRET_KEYS[v.secret.secretName] ??
        assert.fail(`unknown Secret ${v.secret.secretName}`)) {
        const content = key.endsWith('-key.pem')
          ? '-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n'
          : key.endsWith('.pem')
            ? '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'
            : `${key}-secret\n`;
        await writeFile(join(stamp, key), content);
        await chown(join(stamp, key), 0, fsGroup);
        await chmod(join(stamp, key), mode);
        await symlink(join('..data', key), join(root, key));
      }
      await symlink('..2025_01_01_00_00_00.000000001', join(root, '..data'));
      await chown(root, 0, fsGroup);
      await chmod(root, 0o755);
    }
    // The emptyDir: world-writable with the setgid bit and group fsGroup, as the kubelet makes it.
    const privateDir = volumeDir('private');
    await mkdir(privateDir, { recursive: true });
    await chown(privateDir, 0, fsGroup);
    await chmod(privateDir, 0o2777);

    const configs = podConfigs(docs);
    /** A path of the node container, on the files of this test. */
    const onDisk = (c: Container, path: string): string => {
      const m = mountOf(c, path);
      return join(volumeDir(m.name), m.subPath ?? '', path.slice(m.mountPath.length + 1));
    };

    // As mounted, the Secret files are refused: this is what made every pod crash-loop.
    const raw = configs[0]!;
    const pin = raw.hsm.pin_file!;
    const rawPin = join(volumeDir('secrets'), pin.slice(pin.lastIndexOf('/') + 1));
    const refused = await checkAs(uid, gid, [rawPin], {
      tls_ca_file: join(volumeDir('tls'), 'ca.pem'),
      tls_cert_file: join(volumeDir('tls'), 'cometkms-0.pem'),
      tls_key_file: join(volumeDir('tls'), 'cometkms-0-key.pem'),
    });
    assert.notEqual(refused.code, 0, refused.out);
    assert.match(refused.out, /is accessible by group or others \(mode 0440\)/);

    // The init container's script, with its mount paths pointed at these directories.
    assert.deepEqual(init.command?.slice(0, 2), ['sh', '-c']);
    let script = init.command![2]!;
    for (const m of [...init.volumeMounts].sort((a, b) => b.mountPath.length - a.mountPath.length)) {
      assert.equal(m.subPath, undefined);
      script = script.replaceAll(m.mountPath, volumeDir(m.name));
    }
    const copied = await run('sh', ['-c', script], { uid, gid });
    assert.equal(copied.code, 0, copied.out);

    // Every pod's config: each secret file exists on the copy, is the node user's and 0600, and
    // CometKMS's own checks accept it.
    for (const c of configs) {
      const files = secretPaths(c).map((s) => ({ ...s, disk: onDisk(main, s.path) }));
      for (const f of files) {
        const st = await lstat(f.disk);
        assert.ok(st.isFile(), `${f.path}: a regular file`);
        assert.equal(st.uid, uid, `${f.path}: owner`);
        assert.equal(st.mode & 0o777, 0o600, `${f.path}: mode`);
        assert.equal(dirname(f.disk).startsWith(privateDir), true);
      }
      const disk = (kind: string): string => files.find((f) => f.kind === kind)!.disk;
      const accepted = await checkAs(
        uid,
        gid,
        files.filter((f) => f.kind === 'secret' || f.kind === 'tls_key').map((f) => f.disk),
        { tls_ca_file: disk('tls_ca'), tls_cert_file: disk('tls_cert'), tls_key_file: disk('tls_key') },
      );
      assert.equal(accepted.code, 0, `${c.node.id}: ${accepted.out}`);
      assert.deepEqual(JSON.parse(accepted.out.trim().split('\n').at(-1)!), { ok: true, uid });
    }
  });
});

describe('deploy/k8s NetworkPolicies', () => {
  const allows = (ports: Port[], port: number): boolean =>
    ports.some((p) => p.protocol === 'TCP' && p.port === port);

  test('CometKMS: forwarding among its pods, metrics from monitoring, egress only to what the configs dial', async () => {
    const docs = await manifest();
    const np = ofKind<NetworkPolicy>(docs, 'NetworkPolicy').spec;
    assert.deepEqual(np.podSelector.matchLabels, { app: 'cometkms' });
    assert.deepEqual(np.policyTypes.sort(), ['Egress', 'Ingress']);
    for (const c of podConfigs(docs)) {
      const cl = c.cluster!;
      const forwardPort = Number(cl.forward_listen.split(':').at(-1));
      const adminPort = Number(c.admin.listen.split(':').at(-1));
      const fromPods = np.ingress.filter((r) =>
        r.from.some((p) => p.podSelector?.matchLabels['app'] === 'cometkms'),
      );
      assert.ok(
        fromPods.some((r) => allows(r.ports, forwardPort)),
        'forwarding in from CometKMS pods',
      );
      assert.ok(!fromPods.some((r) => allows(r.ports, adminPort)), 'no admin API for other pods');
      const fromMonitoring = np.ingress.filter((r) =>
        r.from.some((p) => p.namespaceSelector?.matchLabels['kubernetes.io/metadata.name'] === 'monitoring'),
      );
      assert.ok(
        fromMonitoring.some((r) => allows(r.ports, adminPort)),
        'scrapes from monitoring',
      );
      assert.equal(np.ingress.length, 2, 'nothing else comes in');
      const to = (label: string) =>
        np.egress.filter((r) => r.to.some((p) => p.podSelector?.matchLabels['app'] === label));
      for (const e of cl.etcd_endpoints) {
        assert.ok(
          to('etcd').some((r) => allows(r.ports, Number(new URL(e).port))),
          `egress to ${e}`,
        );
      }
      assert.ok(
        to('cometkms').some((r) => allows(r.ports, forwardPort)),
        'forwarding out to the leader',
      );
      for (const chain of c.chains) {
        for (const v of chain.validators) {
          const u = new URL(v.addr);
          assert.equal(u.protocol, 'tcp:');
          assert.ok(
            np.egress.some(
              (r) =>
                r.to.some((p) => p.ipBlock?.cidr === `${u.hostname}/32`) && allows(r.ports, Number(u.port)),
            ),
            `egress to validator ${v.addr}`,
          );
        }
      }
    }
  });

  test('etcd: clients from CometKMS and etcd, peers from etcd only', async () => {
    const docs = parseAllDocuments(await readFile(join(REPO, 'deploy/k8s/etcd.yaml'), 'utf8'), {
      version: '1.1',
    });
    const np = ofKind<NetworkPolicy>(
      (Array.isArray(docs) ? docs : [docs]).map((d) => d.toJS() as Record<string, unknown>),
      'NetworkPolicy',
    ).spec;
    assert.deepEqual(np.podSelector.matchLabels, { app: 'etcd' });
    const fromApps = (port: number): string[] =>
      np.ingress
        .filter((r) => allows(r.ports, port))
        .flatMap((r) => r.from.map((p) => p.podSelector?.matchLabels['app'] ?? 'other'))
        .sort();
    assert.deepEqual(fromApps(2379), ['cometkms', 'etcd']);
    assert.deepEqual(fromApps(2380), ['etcd']);
  });
});
