/**
 * A sample SaaS database of realistic shape, for the demo and for tests that
 * replay the brief's incidents: tenants, their subscribers, workflows, the
 * step each subscriber is on in each workflow, uploaded files, and an
 * append-only event log without a primary key (as many real apps have).
 *
 * Generated on the server with generate_series, deterministically: the same
 * scale gives the same rows, so tests can assert exact counts and contents.
 */
import type { PgClient } from '../pg/connect.js';

/** How big to make it. Rows grow linearly with `tenants`. */
export interface SampleOptions {
  /** Number of tenants; default 200 (about 0.6 million rows, ~110 MB). */
  readonly tenants?: number | undefined;
  readonly subscribersPerTenant?: number | undefined;
  readonly workflowsPerTenant?: number | undefined;
  readonly filesPerTenant?: number | undefined;
}

/** Row counts per table after generation. */
export type SampleCounts = Record<string, number>;

/** The file kinds in `files.kind`; incident 4 deletes one of them. */
export const FILE_KINDS = ['invoice', 'avatar', 'attachment', 'export'] as const;

const SCHEMA = `
CREATE TYPE subscriber_status AS ENUM ('active', 'unsubscribed', 'bounced');

CREATE TABLE tenants (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name       text NOT NULL UNIQUE,
  plan       text NOT NULL CHECK (plan IN ('free', 'pro', 'enterprise')),
  created_at timestamptz NOT NULL
);

CREATE TABLE subscribers (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id  bigint NOT NULL REFERENCES tenants(id),
  email      text NOT NULL,
  status     subscriber_status NOT NULL DEFAULT 'active',
  attributes jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL,
  UNIQUE (tenant_id, email)
);

CREATE TABLE workflows (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id  bigint NOT NULL REFERENCES tenants(id),
  name       text NOT NULL,
  steps      int NOT NULL,
  created_at timestamptz NOT NULL
);

-- Which step each subscriber is on in each workflow (incident 1 deleted these).
CREATE TABLE workflow_steps (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id     bigint NOT NULL REFERENCES tenants(id),
  workflow_id   bigint NOT NULL REFERENCES workflows(id),
  subscriber_id bigint NOT NULL REFERENCES subscribers(id),
  step          int NOT NULL,
  next_send_at  timestamptz,
  updated_at    timestamptz NOT NULL,
  UNIQUE (workflow_id, subscriber_id)
);

-- Uploaded files (incident 4 deleted one kind of them for half the tenants).
CREATE TABLE files (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id  bigint NOT NULL REFERENCES tenants(id),
  kind       text NOT NULL,
  name       text NOT NULL,
  size_bytes bigint NOT NULL,
  sha256     bytea NOT NULL,
  created_at timestamptz NOT NULL
);

-- Append-only log with no primary key, as many applications have.
CREATE TABLE events (
  tenant_id  bigint NOT NULL,
  kind       text NOT NULL,
  payload    jsonb,
  at         timestamptz NOT NULL
);

CREATE INDEX ON subscribers (tenant_id);
CREATE INDEX ON workflow_steps (tenant_id);
CREATE INDEX ON workflow_steps (subscriber_id);
CREATE INDEX ON files (tenant_id, kind);
`;

/**
 * Creates the schema and rows in the connected (empty) database. Returns
 * row counts per table. Takes about 3 s at the default scale on 2 cores.
 */
export async function createSampleDatabase(
  client: PgClient,
  options: SampleOptions = {},
): Promise<SampleCounts> {
  const t = options.tenants ?? 200;
  const subs = options.subscribersPerTenant ?? 500;
  const wfs = options.workflowsPerTenant ?? 5;
  const files = options.filesPerTenant ?? 800;
  // Integer literals are validated here, so interpolating them below is safe.
  for (const [k, v] of Object.entries({ t, subs, wfs, files })) {
    if (!Number.isSafeInteger(v) || v < 1)
      throw new RangeError(`sample option ${k} must be a positive integer, got ${v}`);
  }
  const epoch = `timestamptz '2026-01-01 00:00:00+00'`;
  await client.query('BEGIN');
  try {
    await client.query(SCHEMA);
    await client.query(`
      INSERT INTO tenants (name, plan, created_at)
      SELECT 'tenant-' || lpad(g::text, 5, '0'),
             (ARRAY['free', 'pro', 'enterprise'])[1 + g % 3],
             ${epoch} + g * interval '37 minutes'
        FROM generate_series(1, ${t}) g`);
    await client.query(`
      INSERT INTO subscribers (tenant_id, email, status, attributes, created_at)
      SELECT tid, 'user' || s || '@' || 'tenant-' || tid || '.example',
             (ARRAY['active', 'active', 'active', 'unsubscribed', 'bounced']::subscriber_status[])[1 + (tid * 7 + s) % 5],
             jsonb_build_object('first_name', 'Name' || s, 'score', (tid * 31 + s * 17) % 100, 'tags', jsonb_build_array('t' || s % 4)),
             ${epoch} + tid * interval '1 hour' + s * interval '13 seconds' + (s % 1000) * interval '1 microsecond'
        FROM generate_series(1, ${t}) tid, generate_series(1, ${subs}) s`);
    await client.query(`
      INSERT INTO workflows (tenant_id, name, steps, created_at)
      SELECT tid, (ARRAY['welcome', 'onboarding', 'win-back', 'newsletter', 'renewal'])[1 + (w - 1) % 5] || '-' || w,
             3 + (tid + w) % 6, ${epoch} + tid * interval '1 hour' + w * interval '1 day'
        FROM generate_series(1, ${t}) tid, generate_series(1, ${wfs}) w`);
    // Each subscriber is enrolled in one or two of its tenant's workflows.
    await client.query(`
      INSERT INTO workflow_steps (tenant_id, workflow_id, subscriber_id, step, next_send_at, updated_at)
      SELECT s.tenant_id, w.id, s.id, 1 + (s.id + w.id) % w.steps,
             CASE WHEN (s.id + w.id) % 4 = 0 THEN NULL ELSE ${epoch} + interval '300 days' + (s.id % 1440) * interval '1 minute' END,
             ${epoch} + interval '200 days' + (s.id * 7 + w.id) % 100000 * interval '1 second'
        FROM subscribers s
        JOIN workflows w ON w.tenant_id = s.tenant_id
       WHERE (w.id + s.id) % ${wfs} = 0 OR (w.id * 3 + s.id) % ${wfs * 2} = 1
       ORDER BY s.id, w.id`);
    await client.query(`
      INSERT INTO files (tenant_id, kind, name, size_bytes, sha256, created_at)
      SELECT tid, (ARRAY['invoice', 'avatar', 'attachment', 'export'])[1 + (tid + f) % 4],
             'file-' || f || (ARRAY['.pdf', '.png', '.eml', '.csv'])[1 + (tid + f) % 4],
             1000 + (tid * 7919 + f * 104729) % 5000000,
             sha256(convert_to(tid || '/' || f, 'UTF8')),
             ${epoch} + tid * interval '1 hour' + f * interval '7 minutes'
        FROM generate_series(1, ${t}) tid, generate_series(1, ${files}) f`);
    await client.query(`
      INSERT INTO events (tenant_id, kind, payload, at)
      SELECT 1 + g % ${t}, (ARRAY['login', 'send', 'open', 'click'])[1 + g % 4],
             CASE WHEN g % 10 = 0 THEN NULL ELSE jsonb_build_object('n', g) END,
             ${epoch} + g * interval '3 seconds'
        FROM generate_series(1, ${t * 100}) g`);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
  await client.query('ANALYZE');
  const counts: SampleCounts = {};
  for (const table of [
    'tenants',
    'subscribers',
    'workflows',
    'workflow_steps',
    'files',
    'events',
  ]) {
    counts[table] = Number(
      (await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`)).rows[0]?.n,
    );
  }
  return counts;
}
