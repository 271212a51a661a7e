/**
 * Roles a snapshot's schema refers to (owners, grantees and grantors,
 * policy roles), so a restore can check they exist on the target before it
 * writes anything, as pg_restore would fail halfway on the first missing one.
 */
import { UsageError } from '../errors.js';
import type { PgClient } from '../pg/connect.js';
import type { SchemaModel } from '../pg/schema/model.js';

/** Every role name in the model, by where it is used. */
export function referencedRoles(model: SchemaModel): {
  owners: Set<string>;
  grants: Set<string>;
  policies: Set<string>;
} {
  const owners = new Set<string>();
  const grants = new Set<string>();
  const policies = new Set<string>();
  // The model is plain data; walk it rather than list every object kind here,
  // so a kind added to the model is never missed.
  const walk = (v: unknown, key: string | undefined): void => {
    if (Array.isArray(v)) {
      for (const x of v) walk(x, key);
      return;
    }
    if (v === null || typeof v !== 'object') {
      if (typeof v !== 'string') return;
      if (key === 'owner') owners.add(v);
      else if (key === 'grantee' || key === 'grantor') grants.add(v);
      else if (key === 'roles') policies.add(v);
      return;
    }
    for (const [k, x] of Object.entries(v)) walk(x, k);
  };
  walk(model, undefined);
  return { owners, grants, policies };
}

/** What to do about roles. */
export interface RoleOptions {
  /** Restore ownership (ALTER ... OWNER TO); default true. */
  readonly owners: boolean;
  /**
   * Restore grants; default true. (Not policies' roles: a row-level
   * security policy made for another role, or for none, would let other
   * rows through, so the roles it names must exist whatever this says.)
   */
  readonly grants: boolean;
}

/** Throws UsageError naming the roles the restore needs that the target lacks. */
export async function checkRoles(
  client: PgClient,
  model: SchemaModel,
  options: RoleOptions,
): Promise<void> {
  const { owners, grants, policies } = referencedRoles(model);
  const needed = new Set<string>([
    ...(options.owners ? owners : []),
    ...(options.grants ? grants : []),
    ...policies,
  ]);
  if (needed.size === 0) return;
  const r = await client.query<{ rolname: string }>(
    'SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])',
    [[...needed]],
  );
  const present = new Set(r.rows.map((x) => x.rolname));
  const missing = [...needed].filter((n) => !present.has(n)).sort();
  if (missing.length === 0) return;
  const flags = [
    missing.some((m) => owners.has(m)) && options.owners ? '--no-owner' : undefined,
    missing.some((m) => grants.has(m)) && options.grants ? '--no-acl' : undefined,
  ].filter((f) => f !== undefined);
  const forPolicies = missing.filter((m) => policies.has(m));
  const leave =
    flags.length === 0
      ? ''
      : `, or restore with ${flags.join(' ')} to leave ownership and grants to the restoring role`;
  const policyNote =
    forPolicies.length === 0
      ? ''
      : `; row-level security policies name ${forPolicies.join(', ')}: those must exist whatever --no-acl says (a policy for another role would let other rows through)`;
  throw new UsageError(
    `the snapshot refers to roles that do not exist on the target: ${missing.join(', ')}`,
    {
      hint: `create them first (roles are cluster-wide, not in a database snapshot)${leave}${policyNote}`,
    },
  );
}
