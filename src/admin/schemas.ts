/**
 * JSON schemas of the admin API. The response schemas drive Fastify's serialiser, so a body
 * always has exactly these fields and types: `/status` is the ARCHITECTURE.md §5 contract
 * (height/round/step as JSON numbers) whatever the runtime hands over, and a missing required
 * field is a 500 rather than a silently different document.
 */

const str = { type: 'string' } as const;
const bool = { type: 'boolean' } as const;
const int = { type: 'integer' } as const;
const num = { type: 'number' } as const;

/** `{ "error": "..." }`, the body of every failure. */
export const errorSchema = {
  type: 'object',
  required: ['error'],
  properties: { error: str },
} as const;

const hsmSchema = {
  type: 'object',
  required: ['token_label', 'reachable', 'signing_session'],
  properties: { token_label: str, reachable: bool, signing_session: bool, last_error: str },
} as const;

const clusterSchema = {
  type: 'object',
  required: ['etcd_endpoints', 'members', 'etcd_healthy', 'leader_changes'],
  properties: {
    etcd_endpoints: { type: 'array', items: str },
    members: {
      type: 'array',
      items: {
        type: 'object',
        required: ['node_id', 'forward_addr', 'leader'],
        properties: { node_id: str, forward_addr: str, leader: bool },
      },
    },
    etcd_healthy: bool,
    leader_changes: int,
  },
} as const;

const chainSchema = {
  type: 'object',
  required: [
    'chain_id',
    'key_type',
    'protocol',
    'address',
    'height',
    'round',
    'step',
    'last_signed_at',
    'state_alarm',
    'refused',
    'double_sign_refused',
    'errors',
    'validators',
  ],
  properties: {
    chain_id: str,
    key_type: str,
    protocol: str,
    address: str,
    height: int,
    round: int,
    step: int,
    last_signed_at: { type: ['string', 'null'] },
    state_alarm: {
      anyOf: [
        { type: 'null' },
        { type: 'object', required: ['code', 'reason'], properties: { code: str, reason: str } },
      ],
    },
    refused: int,
    double_sign_refused: int,
    errors: int,
    validators: {
      type: 'array',
      items: {
        type: 'object',
        required: ['addr', 'connected', 'connects'],
        properties: { addr: str, connected: bool, remote_node_id: str, connects: int },
      },
    },
  },
} as const;

/** `NodeStatus` (src/admin/types.ts). */
export const statusSchema = {
  type: 'object',
  required: ['node_id', 'version', 'mode', 'role', 'leader_id', 'term', 'uptime_s', 'hsm', 'chains'],
  properties: {
    node_id: str,
    version: str,
    mode: { type: 'string', enum: ['single', 'cluster'] },
    role: { type: 'string', enum: ['leader', 'follower'] },
    leader_id: { type: ['string', 'null'] },
    term: int,
    uptime_s: num,
    hsm: hsmSchema,
    cluster: clusterSchema,
    chains: { type: 'array', items: chainSchema },
  },
} as const;

export const healthSchema = {
  type: 'object',
  required: ['ok'],
  properties: { ok: bool },
} as const;

export const readinessSchema = {
  type: 'object',
  required: ['ready', 'checks'],
  properties: {
    ready: bool,
    checks: { type: 'object', additionalProperties: { type: ['boolean', 'string'] } },
  },
} as const;

/** Body of `POST /leader/transfer`; the whole body is optional. */
export const transferBodySchema = {
  type: 'object',
  additionalProperties: false,
  properties: { to: { type: 'string', minLength: 1, maxLength: 256 } },
} as const;

export const transferResultSchema = {
  type: 'object',
  required: ['transferred', 'message'],
  properties: { transferred: bool, message: str },
} as const;
