/**
 * `--disable-triggers`: the user triggers of the tables a merge writes are
 * switched off inside its transaction and switched back on before it
 * commits, so rows go in as the snapshot or the log has them (a trigger
 * stamping `updated_at` or refusing old dates does not change or stop
 * them), and no other session ever sees a trigger off.
 *
 * What it costs, and why this way: `ALTER TABLE … DISABLE TRIGGER` takes a
 * SHARE ROW EXCLUSIVE lock, so writers to those tables wait until the
 * transaction ends (readers do not). `session_replication_role = replica`
 * would take no lock, but it also switches off foreign keys and their
 * cascades, and needs a superuser: rows without their parents could go in.
 *
 * Only the triggers that would fire in an ordinary session are switched
 * off (enabled, or enabled ALWAYS), one by one, and each is put back as it
 * was: a trigger the user had disabled stays disabled. Internal triggers
 * (foreign keys) are never touched.
 */
import { OperationError } from '../errors.js';
import { type PgClient, serverErrorText } from '../pg/connect.js';
import { qualify, quoteIdent } from '../pg/schema/quote.js';

export interface SuspendedTrigger {
  /** The table, schema-qualified and quoted. */
  readonly table: string;
  readonly name: string;
  /** As it was: `O` enabled, `A` enabled always. */
  readonly enabled: 'O' | 'A';
}

/** The user triggers that fire on writes to these tables now. */
export async function firingTriggers(
  client: PgClient,
  tables: ReadonlyArray<{ schema: string; name: string }>,
): Promise<SuspendedTrigger[]> {
  if (tables.length === 0) return [];
  const r = await client.query<{ schema: string; table: string; name: string; enabled: 'O' | 'A' }>(
    `SELECT n.nspname AS schema, c.relname AS table, t.tgname AS name, t.tgenabled AS enabled
       FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE NOT t.tgisinternal AND t.tgenabled IN ('O', 'A')
        AND (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
      ORDER BY 1, 2, 3`,
    [tables.map((t) => t.schema), tables.map((t) => t.name)],
  );
  return r.rows.map((t) => ({
    table: qualify(t.schema, t.table),
    name: t.name,
    enabled: t.enabled,
  }));
}

/** The statements that switch them off. */
export function disableStatements(triggers: readonly SuspendedTrigger[]): string[] {
  return triggers.map((t) => `ALTER TABLE ONLY ${t.table} DISABLE TRIGGER ${quoteIdent(t.name)}`);
}

/**
 * The statements that put them back as they were. Deferred constraint
 * checks queued by the writes are run first: PostgreSQL refuses to alter a
 * table with pending trigger events, and they would run at commit anyway.
 */
export function enableStatements(triggers: readonly SuspendedTrigger[]): string[] {
  if (triggers.length === 0) return [];
  return [
    'SET CONSTRAINTS ALL IMMEDIATE',
    ...triggers.map(
      (t) =>
        `ALTER TABLE ONLY ${t.table} ENABLE${t.enabled === 'A' ? ' ALWAYS' : ''} TRIGGER ${quoteIdent(t.name)}`,
    ),
  ];
}

/** How they are named in plans, banners and reports: `public.items.stamp, public.items.audit`. */
export function triggerList(
  triggers: ReadonlyArray<{ readonly table: string; readonly name: string }>,
): string {
  return triggers.map((t) => `${t.table}.${quoteIdent(t.name)}`).join(', ');
}

/**
 * Runs switch statements in the caller's transaction. A refusal (not the
 * table's owner) is an OperationError (`triggers.switch`, exit 1) saying
 * what to do; `outcome` ends the message (`nothing was restored`).
 */
export async function switchTriggers(
  client: PgClient,
  statements: readonly string[],
  outcome: string,
): Promise<void> {
  for (const s of statements) {
    try {
      await client.query(s);
    } catch (err) {
      const denied = (err as { code?: unknown }).code === '42501';
      throw new OperationError(
        'triggers.switch',
        `--disable-triggers: ${serverErrorText(err)}; ${outcome}`,
        {
          hint: denied
            ? "switching a table's triggers off needs its owner (or a superuser): run as that role, or without --disable-triggers"
            : undefined,
          cause: err,
        },
      );
    }
  }
}

/**
 * Puts the triggers back as they were (enableStatements), in the caller's
 * transaction. The deferred checks run first, by themselves: a violation
 * they find is the writes' (a key taken since, a foreign key), and takes the
 * caller's usual path, not blamed on the triggers.
 */
export async function enableTriggers(
  client: PgClient,
  triggers: readonly SuspendedTrigger[],
  outcome: string,
): Promise<void> {
  if (triggers.length === 0) return;
  const [checks, ...alters] = enableStatements(triggers);
  await client.query(checks!);
  await switchTriggers(client, alters, outcome);
}
