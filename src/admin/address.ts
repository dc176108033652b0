/** host:port strings of the admin API (`admin.listen`), IPv6 hosts in brackets. */

/** A parsed `host:port`; `host` without brackets. */
export interface HostPort {
  host: string;
  port: number;
}

/** Splits `host:port` or `[v6]:port`; throws a clear error on anything else. */
export function parseHostPort(text: string): HostPort {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) throw new Error(`expected host:port, got ${JSON.stringify(text)}`);
  return { host: m[1] ?? m[2] ?? '', port };
}

/** Formats a host and port back, bracketing IPv6 hosts. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
