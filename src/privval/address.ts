/**
 * Parsing of privval endpoint addresses (`priv_validator_laddr`, spec §1.1).
 *
 * `tcp://host:port` (also written without a scheme) and `unix://path` are the only transports a
 * CometBFT node accepts; anything else is an error here too, so a typo in the config fails at
 * startup instead of dialing forever.
 */

/** A parsed privval address. */
export type PrivvalAddress = { proto: 'tcp'; host: string; port: number } | { proto: 'unix'; path: string };

/**
 * Parses `tcp://host:port`, `host:port` (no `://` means tcp, as in CometBFT), `tcp://[::1]:port`
 * or `unix:///abs/path.sock`. The port may be 0 (a listener picks a free one); a dialer must
 * reject it itself. Throws an Error with an operator-facing message on anything else.
 */
export function parsePrivvalAddress(addr: string): PrivvalAddress {
  const sep = addr.indexOf('://');
  const proto = sep < 0 ? 'tcp' : addr.slice(0, sep);
  const rest = sep < 0 ? addr : addr.slice(sep + 3);
  if (proto === 'unix') {
    if (rest === '') throw new Error(`invalid privval address "${addr}": empty unix socket path`);
    return { proto: 'unix', path: rest };
  }
  if (proto !== 'tcp') {
    throw new Error(
      `invalid privval address "${addr}": unsupported protocol "${proto}" (use tcp:// or unix://)`,
    );
  }
  return { proto: 'tcp', ...parseHostPort(addr, rest) };
}

/** Formats a parsed address back into its canonical `proto://` form. */
export function formatPrivvalAddress(a: PrivvalAddress): string {
  if (a.proto === 'unix') return `unix://${a.path}`;
  return a.host.includes(':') ? `tcp://[${a.host}]:${a.port}` : `tcp://${a.host}:${a.port}`;
}

function parseHostPort(addr: string, hostPort: string): { host: string; port: number } {
  let host: string;
  let portText: string;
  if (hostPort.startsWith('[')) {
    // Bracketed IPv6 literal, e.g. [::1]:26659.
    const close = hostPort.indexOf(']');
    if (close < 0 || hostPort[close + 1] !== ':') {
      throw new Error(`invalid privval address "${addr}": expected [ipv6]:port`);
    }
    host = hostPort.slice(1, close);
    portText = hostPort.slice(close + 2);
  } else {
    const colon = hostPort.lastIndexOf(':');
    if (colon < 0) throw new Error(`invalid privval address "${addr}": missing port (expected host:port)`);
    host = hostPort.slice(0, colon);
    portText = hostPort.slice(colon + 1);
    if (host.includes(':')) {
      throw new Error(
        `invalid privval address "${addr}": write IPv6 hosts in brackets, e.g. tcp://[::1]:26659`,
      );
    }
  }
  if (host === '' || /[\s/]/.test(host)) throw new Error(`invalid privval address "${addr}": bad host`);
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
    throw new Error(`invalid privval address "${addr}": port must be a number 0-65535`);
  }
  return { host, port: Number(portText) };
}
