/**
 * Schema changes in the change log.
 *
 * Logical decoding carries rows, not DDL. To rebuild a moment after a
 * column was added, dropped, renamed or retyped, or a table created or
 * dropped, the log needs two things at the position of each change:
 *
 * 1. the affected tables' columns, by attnum, with the value rows that
 *    existed before an ADD COLUMN have for it (PostgreSQL keeps it as the
 *    column's "missing value" instead of rewriting the table). Event
 *    triggers on the source emit these as transactional logical messages
 *    (prefix `flashback.ddl`): each arrives inside its transaction, in
 *    order with the rows around it, and only if it commits;
 * 2. the whole schema after the change, to create the tables of a restore
 *    at that moment. Capture reads it with the same reader as `backup`
 *    right after the transaction's commit arrives. A generation counter,
 *    bumped in the same transaction as each change, tells whether another
 *    schema change committed in between: then the read is not that moment's
 *    schema and nothing is recorded for it (a restore to a moment between
 *    the two says so; moments after the second are recorded).
 *
 * The objects on the source: schema `_flashback` with sequence
 * `generation` and its functions, and event triggers
 * `flashback_ddl` (ddl_command_end), `flashback_drop` (sql_drop) and
 * `flashback_rewrite` (table_rewrite). Creating event triggers needs a
 * superuser; without one, capture warns and the log carries no schema
 * events (a restore across a schema change is then refused, as before).
 * The trigger functions never fail the user's DDL: an error inside them
 * becomes a WARNING, and the missing event makes restores across that
 * change refuse (the log's columns then disagree with the recorded ones).
 *
 * One more duty of `flashback_ddl`: a table a command leaves without a
 * primary key and with the default replica identity (CREATE TABLE or
 * CREATE TABLE AS without a key, a primary key dropped) is set to REPLICA
 * IDENTITY FULL, with a WARNING naming it. Capture's publication is FOR
 * ALL TABLES, and PostgreSQL refuses UPDATE and DELETE on a published
 * table that has no replica identity: without this, a migration creating
 * such a table would break the application's writes to it as soon as it
 * ran. (Capture refuses to start over existing ones instead: it does not
 * change tables the user had before asking.) Such a table given a primary
 * key again (a migration that replaces a key drops the old one first) goes
 * back to the default identity: FULL makes the server log the whole old row
 * of every update and delete, which a keyed table does not need. The tables
 * it set are remembered in `_flashback.full_identity`, an unlogged table
 * (never published, never in the WAL); a crash empties it, which only
 * leaves such tables FULL.
 */
import type { PgClient } from '../pg/connect.js';
import { DEFAULT_PUBLICATION } from '../pg/replication/stream.js';
import type { SchemaModel } from '../pg/schema/model.js';
import { readSchema } from '../pg/schema/read.js';
import { readTableShapes, type TableShape } from '../pg/schema/shapes.js';
import { SCHEMA_EVENT_PREFIX } from '../repo/changelog-format.js';

/** Version of the objects below; raised when they change, so capture replaces them. */
export const SCHEMA_EVENTS_VERSION = 4;

/** A column as an event lists it: attnum, name, type (format_type), dropped, value of rows from before it was added. */
export type EventColumn = readonly [
  attnum: number,
  name: string,
  type: string,
  dropped: boolean,
  /** PostgreSQL's missing value (text form) when atthasmissing; null otherwise (rows from before have NULL). */
  missing: string | null,
];

/** A table after a schema change (ordinary or partitioned; never temporary). */
export interface EventTable {
  readonly oid: number;
  readonly schema: string;
  readonly name: string;
  readonly columns: readonly EventColumn[];
}

/** What one `flashback.ddl` message says. */
export type SchemaEvent =
  /** A DDL command ended (ddl_command_end): the tables it touched, as they are now. */
  | {
      readonly kind: 'ddl';
      readonly generation: number;
      readonly tags: readonly string[];
      readonly tables: readonly EventTable[];
    }
  /** Tables were dropped (sql_drop). */
  | {
      readonly kind: 'drop';
      readonly generation: number;
      readonly tables: ReadonlyArray<{ oid: number; schema: string; name: string }>;
    }
  /**
   * A table is about to be rewritten (table_rewrite): a column retyped, a
   * column added with a volatile default, ... Its rows' new values are not
   * in the log. reason: PostgreSQL's AT_REWRITE_* bits.
   */
  | { readonly kind: 'rewrite'; readonly oid: number; readonly reason: number };

/**
 * Whether capture records the schema after a transaction holding these
 * events (`schemas/<endlsn>.json`, docs/REPOSITORY.md): it does for each
 * one with a readable `ddl` or `drop` event (capture.ts, its Commit case).
 * A `rewrite` alone changes no table's columns.
 */
export function recordsSchema(events: readonly { readonly event: string }[]): boolean {
  return events.some((e) => {
    try {
      return parseSchemaEvent(e.event).kind !== 'rewrite';
    } catch {
      return false; // (capture stores it as received, and records nothing for it)
    }
  });
}

/** Parses a message's content; throws on anything else (a damaged or foreign message). */
export function parseSchemaEvent(content: string): SchemaEvent {
  const j = JSON.parse(content) as Record<string, unknown>;
  const kind = j.kind;
  if (kind === 'ddl' || kind === 'drop') {
    const tables = (j.tables ?? []) as Array<Record<string, unknown>>;
    if (!Array.isArray(tables) || typeof j.g !== 'number') throw new Error('malformed event');
    if (kind === 'drop') {
      return {
        kind,
        generation: j.g,
        tables: tables.map((t) => ({
          oid: Number(t.oid),
          schema: String(t.schema),
          name: String(t.name),
        })),
      };
    }
    return {
      kind,
      generation: j.g,
      tags: (j.tags ?? []) as string[],
      tables: tables.map((t) => ({
        oid: Number(t.oid),
        schema: String(t.schema),
        name: String(t.name),
        columns: t.columns as EventColumn[],
      })),
    };
  }
  if (kind === 'rewrite') return { kind, oid: Number(j.oid), reason: Number(j.reason) };
  throw new Error(`unknown schema event kind ${JSON.stringify(kind)}`);
}

// Tables of a command, and their partitions and inheritance children (an
// ALTER on a parent changes them too): ordinary and partitioned, not
// temporary, not Flashback's own.
const TOUCHED_TABLES = `
  WITH RECURSIVE touched(oid) AS (
      SELECT d.objid FROM pg_catalog.pg_event_trigger_ddl_commands() d
       WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
    UNION
      SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN touched t ON i.inhparent = t.oid)
  SELECT c.oid, n.nspname, c.relname
    FROM touched t
    JOIN pg_catalog.pg_class c ON c.oid = t.oid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't' AND n.nspname <> '_flashback'`;

// Trigger functions run with fixed settings: the search path (catalogs
// first, temporary objects last, so a temporary table cannot stand in for
// a catalog) and the settings that shape values' text (a missing value is
// stored as text and loaded by COPY under these defaults).
const FUNCTION_SETTINGS = `SET search_path = pg_catalog, pg_temp SET DateStyle = 'ISO, MDY' SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' SET extra_float_digits = 3 SET bytea_output = 'hex'`;

/**
 * The source-side objects, created (or replaced) in one transaction. The
 * missing value is read through text[]: attmissingval is an anyarray of one
 * element, and array_in of its text form gives that element's text exactly.
 */
const INSTALL = `
CREATE SCHEMA IF NOT EXISTS _flashback;
COMMENT ON SCHEMA _flashback IS 'Flashback capture: schema-change events for the change log (docs/CAPTURE.md)';
-- The generation: a sequence, not a row, so concurrent migrations never
-- wait on (or deadlock over, or fail to serialize) Flashback's counter.
-- nextval happens before the change commits; a rolled-back change leaves
-- a gap, which only makes capture's check more careful.
CREATE SEQUENCE IF NOT EXISTS _flashback.generation;
CREATE OR REPLACE FUNCTION _flashback.version() RETURNS int LANGUAGE sql IMMUTABLE
  AS 'SELECT ${SCHEMA_EVENTS_VERSION}';
-- Tables flashback_ddl set to REPLICA IDENTITY FULL because they had no
-- primary key: one that has a key again goes back to the default.
CREATE UNLOGGED TABLE IF NOT EXISTS _flashback.full_identity (relid oid PRIMARY KEY);
-- Readable by any role (a capture that is not a superuser checks them); the functions run as their owner.
GRANT USAGE ON SCHEMA _flashback TO PUBLIC;
GRANT SELECT ON SEQUENCE _flashback.generation TO PUBLIC;

-- Emits one event inside the transaction; a schema change (not a rewrite)
-- first bumps the generation, and carries it as g.
CREATE OR REPLACE FUNCTION _flashback.emit(event jsonb, counted boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER ${FUNCTION_SETTINGS} AS $fb$
BEGIN
  IF counted THEN
    event := event || jsonb_build_object('g', nextval('_flashback.generation'));
  END IF;
  PERFORM pg_logical_emit_message(true, '${SCHEMA_EVENT_PREFIX}', event::text);
END $fb$;
REVOKE ALL ON FUNCTION _flashback.emit(jsonb, boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION _flashback.on_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER ${FUNCTION_SETTINGS} AS $fb$
DECLARE
  bare regclass;
  keyed regclass;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() d
                  WHERE d.schema_name IS DISTINCT FROM 'pg_temp'
                    AND d.schema_name IS DISTINCT FROM '_flashback'
                    AND NOT d.in_extension IS TRUE) THEN
    RETURN;
  END IF;
  -- Published tables (not temporary, not unlogged) left without a replica
  -- identity: UPDATE and DELETE on them would fail. The ALTER fires this
  -- trigger again, which finds the table FULL and records the change.
  BEGIN
    FOR bare IN
      SELECT c.oid::regclass FROM (${TOUCHED_TABLES}) t (oid, nspname, relname)
        JOIN pg_class c ON c.oid = t.oid
       WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND c.relreplident = 'd'
         AND NOT EXISTS (SELECT 1 FROM pg_index i
                          WHERE i.indrelid = c.oid AND i.indisprimary AND i.indimmediate)
         AND EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = '${DEFAULT_PUBLICATION}')
    LOOP
      EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', bare);
      INSERT INTO _flashback.full_identity VALUES (bare) ON CONFLICT DO NOTHING;
      RAISE WARNING 'flashback: % has no primary key the server can use as its replica identity (none, or a DEFERRABLE one): set to REPLICA IDENTITY FULL, since UPDATE and DELETE on it would otherwise fail while capture publishes every table (give it a primary key that is not deferrable to use that instead)', bare;
    END LOOP;
    FOR keyed IN
      SELECT c.oid::regclass FROM (${TOUCHED_TABLES}) t (oid, nspname, relname)
        JOIN pg_class c ON c.oid = t.oid
        JOIN _flashback.full_identity f ON f.relid = c.oid
       WHERE c.relreplident = 'f'
         AND EXISTS (SELECT 1 FROM pg_index i
                      WHERE i.indrelid = c.oid AND i.indisprimary AND i.indimmediate)
    LOOP
      EXECUTE format('ALTER TABLE %s REPLICA IDENTITY DEFAULT', keyed);
      DELETE FROM _flashback.full_identity WHERE relid = keyed;
      RAISE WARNING 'flashback: % has a primary key again: its replica identity, set to FULL by Flashback while it had none, is back to the default', keyed;
    END LOOP;
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'flashback: could not set REPLICA IDENTITY FULL on a table without a primary key (UPDATE and DELETE on it fail while capture runs): %', SQLERRM;
  END;
  PERFORM _flashback.emit(jsonb_build_object(
    'kind', 'ddl',
    'tags', (SELECT jsonb_agg(DISTINCT d.command_tag) FROM pg_event_trigger_ddl_commands() d),
    'tables', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                 'oid', t.oid, 'schema', t.nspname, 'name', t.relname,
                 'columns', (SELECT jsonb_agg(jsonb_build_array(
                               a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attisdropped,
                               CASE WHEN a.atthasmissing THEN (a.attmissingval::text::text[])[1] END)
                               ORDER BY a.attnum)
                               FROM pg_attribute a WHERE a.attrelid = t.oid AND a.attnum > 0))), '[]')
                 FROM (${TOUCHED_TABLES}) t (oid, nspname, relname))), true);
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'flashback: schema change not recorded in the change log: %', SQLERRM;
END $fb$;

CREATE OR REPLACE FUNCTION _flashback.on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER ${FUNCTION_SETTINGS} AS $fb$
BEGIN
  BEGIN
    DELETE FROM _flashback.full_identity
     WHERE relid IN (SELECT o.objid FROM pg_event_trigger_dropped_objects() o
                      WHERE o.classid = 'pg_catalog.pg_class'::pg_catalog.regclass);
  EXCEPTION WHEN OTHERS THEN
    NULL; -- only a memory of which tables Flashback set FULL
  END;
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() o
                  WHERE NOT o.is_temporary AND o.schema_name IS DISTINCT FROM '_flashback') THEN
    RETURN;
  END IF;
  PERFORM _flashback.emit(jsonb_build_object(
    'kind', 'drop',
    'tables', (SELECT coalesce(jsonb_agg(jsonb_build_object('oid', o.objid, 'schema', o.schema_name, 'name', o.object_name)), '[]')
                 FROM pg_event_trigger_dropped_objects() o
                WHERE o.classid = 'pg_catalog.pg_class'::regclass AND o.objsubid = 0
                  AND o.object_type = 'table' AND NOT o.is_temporary)), true);
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'flashback: schema change not recorded in the change log: %', SQLERRM;
END $fb$;

CREATE OR REPLACE FUNCTION _flashback.on_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER ${FUNCTION_SETTINGS} AS $fb$
BEGIN
  PERFORM _flashback.emit(jsonb_build_object(
    'kind', 'rewrite', 'oid', pg_event_trigger_table_rewrite_oid(),
    'reason', pg_event_trigger_table_rewrite_reason()), false);
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'flashback: table rewrite not recorded in the change log: %', SQLERRM;
END $fb$;

DO $fb$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'flashback_ddl') THEN
    CREATE EVENT TRIGGER flashback_ddl ON ddl_command_end EXECUTE FUNCTION _flashback.on_ddl();
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'flashback_drop') THEN
    CREATE EVENT TRIGGER flashback_drop ON sql_drop EXECUTE FUNCTION _flashback.on_drop();
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'flashback_rewrite') THEN
    CREATE EVENT TRIGGER flashback_rewrite ON table_rewrite EXECUTE FUNCTION _flashback.on_rewrite();
  END IF;
END $fb$;
-- Also under session_replication_role = replica (some migration tools set it).
ALTER EVENT TRIGGER flashback_ddl ENABLE ALWAYS;
ALTER EVENT TRIGGER flashback_drop ENABLE ALWAYS;
ALTER EVENT TRIGGER flashback_rewrite ENABLE ALWAYS;`;

/** What `installSchemaEvents` found. */
export type InstallResult =
  | { readonly installed: true; readonly created: boolean }
  | { readonly installed: false; readonly reason: string };

/**
 * Makes sure the event triggers are on the source at this version. Needs a
 * superuser to create them; otherwise says why not (capture warns and goes
 * on: its rows are still captured).
 */
export async function installSchemaEvents(client: PgClient): Promise<InstallResult> {
  const triggers = await client.query<{ n: string; version: string | null }>(
    `SELECT count(*)::text AS n,
            (SELECT p.prosrc FROM pg_proc p JOIN pg_namespace s ON s.oid = p.pronamespace
              WHERE s.nspname = '_flashback' AND p.proname = 'version') AS version
       FROM pg_event_trigger
      WHERE evtname IN ('flashback_ddl', 'flashback_drop', 'flashback_rewrite') AND evtenabled = 'A'`,
  );
  const row = triggers.rows[0];
  if (row?.n === '3' && row.version === `SELECT ${SCHEMA_EVENTS_VERSION}`) {
    return { installed: true, created: false };
  }
  const su = await client.query<{ s: string }>(
    `SELECT rolsuper::text AS s FROM pg_roles WHERE rolname = current_user`,
  );
  if (su.rows[0]?.s !== 'true') {
    return {
      installed: false,
      reason: 'creating event triggers needs a superuser',
    };
  }
  try {
    await client.query('BEGIN');
    await client.query(INSTALL);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    return { installed: false, reason: (err as Error).message };
  }
  return { installed: true, created: true };
}

/** The source's schema-change generation (0 before the first change). */
export async function readGeneration(client: PgClient): Promise<number> {
  const r = await client.query<{ g: string }>(
    'SELECT (CASE WHEN is_called THEN last_value ELSE 0 END)::text AS g FROM _flashback.generation',
  );
  return Number(r.rows[0]!.g);
}

/** The schema right after the change of one generation, as capture records it. */
export interface SchemaAt {
  readonly model: SchemaModel;
  readonly shapes: ReadonlyMap<string, TableShape>;
}

/**
 * Reads the schema as it is right after the change numbered `generation`,
 * or undefined when a later change has committed (then this read would be
 * another moment's). The counter is read before and after: catalog
 * functions (pg_get_indexdef, ...) see the newest catalog, not a snapshot,
 * so a change committing during the read must be caught by the second look.
 */
export async function readSchemaAt(
  client: PgClient,
  generation: number,
): Promise<SchemaAt | undefined> {
  if ((await readGeneration(client)) !== generation) return undefined;
  const model = await readSchema(client);
  const shapes = await readTableShapes(client);
  if ((await readGeneration(client)) !== generation) return undefined;
  return { model, shapes };
}
