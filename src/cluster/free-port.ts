/**
 * Free loopback TCP ports for listeners that something (often another process: etcd, a KMS
 * node, a validator) binds a little later: the demo's and the tests' ports.
 *
 * A port that bind(0) reported free can be gone by the time it is used, two ways:
 *   1. the kernel also hands ports of the ephemeral range (ip_local_port_range) to outgoing
 *      connections, so any connect() on the machine may take it in the meantime;
 *   2. another process picking a free port at the same moment gets the same one.
 * Both made CI fail (etcd: "bind: address already in use"). So ports come from below the
 * ephemeral range, where the kernel never picks a port by itself, and each one is claimed for
 * CLAIM_MS by creating a file named after it in a directory every caller on the machine shares:
 * no two callers get the same port within that time. A port something else holds is skipped.
 */
import { closeSync, lstatSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Lowest port handed out: above the ports services commonly use. */
const LOWEST_PORT = 10_000;
/** How long a claimed port is not handed out again, to anyone on this machine. */
const CLAIM_MS = 10 * 60_000;
/** Ports tried before giving up on the claimed range and asking the kernel for any port. */
const ATTEMPTS = 200;

/** One directory per user; claims are only kept where that directory is really this user's. */
const claimDir = join(tmpdir(), `cometkms-port-claims-${process.getuid?.() ?? 'any'}`);

/** A free loopback port, claimed for this caller (see the module comment). */
export async function freeLoopbackPort(): Promise<number> {
  const [low, high] = [LOWEST_PORT, ephemeralLow() - 1];
  if (high - low >= 1000) {
    const claiming = claimDirUsable();
    for (let i = 0; i < ATTEMPTS; i++) {
      const port = low + Math.floor(Math.random() * (high - low + 1));
      if ((!claiming || claim(port)) && (await bindable(port))) return port;
    }
  }
  return await kernelPickedPort();
}

/**
 * Creates the claim directory if needed; true if it is a directory (not a link) this user owns.
 * Where it is not (a shared or odd /tmp), ports are still taken from below the ephemeral range,
 * only without the claims.
 */
function claimDirUsable(): boolean {
  try {
    mkdirSync(claimDir, { recursive: true, mode: 0o700 });
    const st = lstatSync(claimDir);
    return st.isDirectory() && (process.getuid === undefined || st.uid === process.getuid());
  } catch {
    return false;
  }
}

/** The first port of the kernel's ephemeral range (32768 where it cannot be read). */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 0 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

/** Claims `port` by creating its file; a claim older than CLAIM_MS is taken over. */
function claim(port: number): boolean {
  const file = join(claimDir, String(port));
  try {
    closeSync(openSync(file, 'wx'));
    return true;
  } catch (err) {
    // Only an existing claim keeps the port from this caller; a directory that cannot be written
    // means claims are not kept at all, and the bind check alone decides.
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return true;
  }
  try {
    if (Date.now() - statSync(file).mtimeMs < CLAIM_MS) return false;
    unlinkSync(file);
    closeSync(openSync(file, 'wx'));
    return true;
  } catch {
    return false; // another caller took the stale claim over first
  }
}

/** True if nothing holds `port` on 127.0.0.1 now. */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A port the kernel picks (in the ephemeral range): the fallback when no claim succeeds. */
function kernelPickedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
