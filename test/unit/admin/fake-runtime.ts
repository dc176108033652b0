/** A scriptable AdminRuntime for admin API tests. */
import pino from 'pino';
import { Metrics } from '../../../src/admin/metrics.ts';
import type { AdminRuntime, Readiness, TransferResult } from '../../../src/admin/runtime-view.ts';
import { type AdminServer, startAdminServer } from '../../../src/admin/server.ts';
import type { NodeStatus } from '../../../src/admin/types.ts';
import { VERSION } from '../../../src/version.ts';

/** A cluster leader signing two chains; tests mutate it between requests. */
export function sampleStatus(): NodeStatus {
  return {
    node_id: 'kms-1',
    version: VERSION,
    mode: 'cluster',
    role: 'leader',
    leader_id: 'kms-1',
    term: 42,
    uptime_s: 12.5,
    hsm: { token_label: 'cometkms', reachable: true, signing_session: true },
    cluster: {
      etcd_endpoints: ['http://127.0.0.1:2379'],
      members: [
        { node_id: 'kms-1', forward_addr: '127.0.0.1:26790', leader: true },
        { node_id: 'kms-2', forward_addr: '127.0.0.1:26791', leader: false },
      ],
      etcd_healthy: true,
      leader_changes: 1,
    },
    chains: [
      {
        chain_id: 'chain-a',
        key_type: 'ed25519',
        protocol: 'v0.38',
        address: '3A9F51C0D2B8E47761F0AB92C5D3E8F10A2B3C4D',
        height: 100,
        round: 0,
        step: 3,
        last_signed_at: '2025-01-01T00:00:00.000Z',
        state_alarm: null,
        refused: 3,
        double_sign_refused: 1,
        errors: 2,
        validators: [
          { addr: 'tcp://127.0.0.1:26659', connected: true, remote_node_id: 'abcd', connects: 1 },
          { addr: 'unix:///tmp/pv.sock', connected: false, connects: 0 },
        ],
      },
      {
        chain_id: 'chain-b',
        key_type: 'secp256k1',
        protocol: 'v1.0',
        address: 'B7E2C94A10F35D68E0C1A2B3D4E5F60718293A4B',
        height: 7,
        round: 1,
        step: 2,
        last_signed_at: null,
        state_alarm: null,
        refused: 0,
        double_sign_refused: 0,
        errors: 0,
        validators: [{ addr: 'tcp://127.0.0.1:26660', connected: true, connects: 3 }],
      },
    ],
  };
}

/** An AdminRuntime whose answers are plain fields; records transfer requests. */
export class FakeRuntime implements AdminRuntime {
  current: NodeStatus = sampleStatus();
  ready: Readiness = { ready: true, checks: { hsm: true, etcd: true } };
  transferAnswer: TransferResult = { transferred: true, message: 'leadership handed to kms-2' };
  transferError: Error | undefined;
  readonly transfers: Array<string | undefined> = [];

  status(): NodeStatus {
    return this.current;
  }

  readiness(): Readiness {
    return this.ready;
  }

  async transferLeadership(to?: string): Promise<TransferResult> {
    this.transfers.push(to);
    if (this.transferError !== undefined) throw this.transferError;
    return this.transferAnswer;
  }
}

/** An admin server on a free loopback port serving `runtime`, with the default public routes. */
export async function startTestAdminServer(runtime: AdminRuntime, token: string): Promise<AdminServer> {
  return await startAdminServer({
    listen: '127.0.0.1:0',
    runtime,
    metrics: new Metrics({ processMetrics: false }),
    token,
    publicRoutes: ['/healthz', '/metrics'],
    logger: pino({ level: 'silent' }),
  });
}
