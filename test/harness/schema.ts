/** Schema comparison helpers shared by integration tests: the model as read in a backup, and Debian's pg_dump. */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import type { SchemaModel } from '../../src/pg/schema/model.js';
import { readSchema } from '../../src/pg/schema/read.js';
import { connectTo, type TestServer } from './pg.js';

const execFileAsync = promisify(execFile);

/** Debian's pg_dump 15: the reference a restored schema is compared with (it refuses servers newer than 15). */
export const PG_DUMP = '/usr/bin/pg_dump';

/** The fidelity fixture: every type family and object kind a restore must reproduce. */
export const FIXTURE = new URL('../fixtures/fidelity.sql', import.meta.url);

/** Reads a database's schema model as a backup does: in one REPEATABLE READ, read-only transaction. */
export async function readModel(server: TestServer, database: string): Promise<SchemaModel> {
  const c = await connectTo(server, database);
  try {
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    try {
      return await readSchema(c);
    } finally {
      await c.query('ROLLBACK');
    }
  } finally {
    await c.end();
  }
}

/** `pg_dump --schema-only` of a database; throws (never skips) if pg_dump is missing. */
export async function schemaDump(server: TestServer, database: string): Promise<string> {
  if (!existsSync(PG_DUMP)) {
    throw new Error(
      `${PG_DUMP} is missing: this test compares with Debian's pg_dump 15 (apt-get install postgresql-client-15)`,
    );
  }
  const { stdout } = await execFileAsync(
    PG_DUMP,
    [
      '--schema-only',
      '--no-password',
      '-h',
      server.host,
      '-p',
      String(server.port),
      '-U',
      server.user,
      database,
    ],
    { env: { ...process.env, PGPASSWORD: server.password }, maxBuffer: 64 * 1024 * 1024 },
  );
  // pg_dump 15.14+ brackets its output with `\restrict KEY` / `\unrestrict KEY`,
  // a psql guard against meta-commands in restored object names (CVE-2025-8714).
  // KEY is random per run; it says nothing about the schema.
  return stdout.replace(/^\\(un)?restrict [A-Za-z0-9]+$/gm, '\\$1restrict KEY');
}
