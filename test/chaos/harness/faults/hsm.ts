/**
 * HSM faults, through the fault shim in front of the spy (hsm/fault-shim.c): the module failing
 * C_Sign, the signing session closed under the node, slow signs. The witness, below the shim,
 * still sees exactly what reached the HSM.
 */
import { leaderNode } from './common.ts';
import type { FaultKind } from './types.ts';

/** CKR_DEVICE_ERROR, CKR_GENERAL_ERROR, CKR_DEVICE_REMOVED, CKR_SESSION_HANDLE_INVALID */
const FAILURES = [0x30, 0x5, 0x32, 0xb3];

export const hsmFaults: FaultKind[] = [
  {
    name: 'hsm-fail',
    modes: ['single', 'cluster'],
    layer: 'hsm',
    dwellMs: 1_500,
    async inject(ctx) {
      const node = await leaderNode(ctx);
      const rv = FAILURES[ctx.rng.int(FAILURES.length)]!;
      await node.hsm.fail(rv);
      return { detail: `${node.id}: C_Sign fails with 0x${rv.toString(16)}`, heal: () => node.hsm.pass() };
    },
  },
  {
    name: 'hsm-close-session',
    modes: ['single', 'cluster'],
    layer: 'hsm',
    dwellMs: 1_000,
    async inject(ctx) {
      const node = await leaderNode(ctx);
      await node.hsm.closeSession();
      return { detail: `${node.id}: signing session closed under the node`, heal: () => node.hsm.pass() };
    },
  },
  {
    name: 'hsm-slow',
    modes: ['single', 'cluster'],
    layer: 'hsm',
    dwellMs: 2_000,
    async inject(ctx) {
      const node = await leaderNode(ctx);
      const ms = 100 + ctx.rng.int(1_400);
      await node.hsm.delay(ms);
      return { detail: `${node.id}: every C_Sign takes ${ms} ms more`, heal: () => node.hsm.pass() };
    },
  },
];
