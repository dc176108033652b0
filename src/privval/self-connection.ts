/**
 * A TCP connect to a loopback port nobody listens on can connect to itself: when the kernel picks
 * the destination port as the source port (possible whenever the validator's port lies in the
 * ephemeral range, /proc/sys/net/ipv4/ip_local_port_range), the SYN meets itself and the socket
 * opens. A SecretConnection handshake with oneself then succeeds, and the dialer would hold the
 * validator's own port until its idle timeout, so a CometBFT node starting at that moment fails
 * to bind its `priv_validator_laddr`. Measured here: about one dial in a few thousand.
 */

import type net from 'node:net';

/** True if `socket` is connected to itself (same address and port at both ends). */
export function isSelfConnection(socket: net.Socket): boolean {
  return (
    socket.localPort !== undefined &&
    socket.localPort === socket.remotePort &&
    socket.localAddress === socket.remoteAddress
  );
}

/**
 * Throws if `socket` is connected to itself, after resetting it: a reset leaves no TIME_WAIT
 * behind, which (the port having been chosen by the kernel, without SO_REUSEADDR) would keep the
 * validator from binding the port for a minute.
 */
export function refuseSelfConnection(socket: net.Socket): void {
  if (!isSelfConnection(socket)) return;
  const end = `${socket.remoteAddress}:${socket.remotePort}`;
  socket.resetAndDestroy();
  throw new Error(
    `connected to itself: nothing listens on ${end} and the kernel chose that port for this end too; ` +
      'dropped so the validator can bind it (a port below the ephemeral range avoids this)',
  );
}
