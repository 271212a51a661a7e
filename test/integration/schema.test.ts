import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PgClient } from '../../src/pg/connect.js';
import { generateDdl } from '../../src/pg/schema/ddl.js';
import type { DdlStatement, SchemaModel, TableModel } from '../../src/pg/schema/model.js';
import { qualify, quoteIdent } from '../../src/pg/schema/quote.js';
import { connectTo, freshDatabase, sql, type TestServer, testServers } from '../harness/pg.js';
import { FIXTURE, PG_DUMP, readModel, schemaDump } from '../harness/schema.js';

async function withClient<T>(
  server: TestServer,
  database: string,
  fn: (c: PgClient) => Promise<T>,
): Promise<T> {
  const c = await connectTo(server, database);
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function apply(c: PgClient, statements: readonly DdlStatement[]): Promise<void> {
  for (const s of statements) {
    try {
      await c.query(s.sql);
    } catch (err) {
      throw new Error(`${s.kind} ${s.name} failed: ${(err as Error).message}\n${s.sql}`);
    }
  }
}

/** The rows of a table or materialized view as text, in a stable order. */
async function rowsOf(c: PgClient, relation: string): Promise<string[]> {
  const r = await c.query<{ t: string }>(
    `SELECT t::text AS t FROM ONLY ${relation} AS t ORDER BY 1`,
  );
  return r.rows.map((x) => x.t);
}

/**
 * Copies every table's rows from `from` to `to` in PostgreSQL's text form:
 * each value is read as text and written back through the column type's
 * input function (a parameter of unknown type), as COPY text would.
 */
async function copyRows(from: PgClient, to: PgClient, model: SchemaModel): Promise<void> {
  for (const t of model.tables) {
    if (!t.hasData) continue;
    const columns = t.columns.filter((c) => c.generated === undefined).map((c) => c.name);
    const list = columns.map(quoteIdent).join(', ');
    const name = qualify(t.schema, t.name);
    const rows = await from.query({
      text: `SELECT ${list} FROM ONLY ${name}`,
      rowMode: 'array',
    });
    const params = columns.map((_, i) => `$${i + 1}`).join(', ');
    const override = t.columns.some((c) => c.identity === 'always')
      ? ' OVERRIDING SYSTEM VALUE'
      : '';
    const insert =
      columns.length === 0
        ? `INSERT INTO ${name} DEFAULT VALUES`
        : `INSERT INTO ${name} (${list})${override} VALUES (${params})`;
    for (const row of rows.rows as unknown[][]) await to.query(insert, row);
  }
}

function table(model: SchemaModel, schema: string, name: string): TableModel {
  const t = model.tables.find((x) => x.schema === schema && x.name === name);
  if (t === undefined) throw new Error(`table ${schema}.${name} is not in the model`);
  return t;
}

const servers = testServers();

describe.each(servers.map((s) => [s.major, s] as const))(
  'schema model on PostgreSQL %i',
  (major, server: TestServer) => {
    let source: string;
    let restored: string;
    let model: SchemaModel;
    const scratch: string[] = [];

    beforeAll(async () => {
      source = await freshDatabase(server, 'schema_src');
      await sql(server, source, await readFile(FIXTURE, 'utf8'));
      model = await readModel(server, source);
      restored = await freshDatabase(server, 'schema_dst');
      const ddl = generateDdl(model);
      await withClient(server, source, (from) =>
        withClient(server, restored, async (to) => {
          await apply(to, ddl.preData);
          await copyRows(from, to, model);
          await apply(to, ddl.postData);
        }),
      );
    });

    afterAll(async () => {
      for (const db of [source, restored, ...scratch]) {
        if (db !== undefined)
          await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      }
    });

    it('models every object kind of the fixture, and nothing as unsupported', () => {
      expect(model.serverVersionNum).toBeGreaterThanOrEqual(major * 10000);
      expect(model.unsupported).toEqual([]);
      expect(model.extensions.map((e) => e.name)).toEqual(['btree_gist', 'pgcrypto']);
      // Extension members (btree_gist's functions, operator classes...) are not modelled.
      expect(model.functions.map((f) => `${f.schema}.${f.name}`)).toEqual([
        'Mixed Schema.Odd "Function"',
        'app.avg_accum',
        'app.avg_final',
        'app.booking_check',
        'app.double_it',
        'app.insert_active_user',
        'app.is_even',
        'app.next_code',
        'app.slugify',
        'app.touch',
      ]);
      expect(model.types.map((t) => `${t.kind} ${t.name}`).sort()).toEqual([
        'composite address',
        'composite contact',
        'domain email',
        'domain even_int',
        'domain positive_int',
        'domain small_positive',
        'enum mood',
        'range floatrange',
      ]);

      expect(model.aggregates.map((a) => `${a.kind} ${a.name}(${a.arguments})`)).toEqual([
        'normal my_avg(numeric)',
        'normal my_max(integer)',
        'ordered-set my_percentile(double precision ORDER BY anyelement)',
        'normal my_sum(integer)',
      ]);
      expect(model.collations.map((c) => `${c.provider} ${c.name}`)).toEqual([
        'icu case_insensitive',
        'libc posix_copy',
      ]);

      const users = table(model, 'app', 'users');
      expect(users.primaryKey).toEqual(['id']);
      expect(users.columns.find((c) => c.name === 'slug')?.generated).toBe('app.slugify(name)');
      expect(users.columns.find((c) => c.name === 'nickname')?.collation).toBe('pg_catalog."C"');
      expect(table(model, 'app', 'all_types').columns[0]).toMatchObject({
        name: 'id',
        identity: 'always',
      });
      expect(table(model, 'app', 'documents').columns[0]).toMatchObject({ identity: 'by-default' });

      const audit = table(model, 'app', 'audit_log');
      expect([audit.primaryKey, audit.replicaIdentityKey, audit.owner]).toEqual([
        null,
        null,
        'flashback_fixture_reader',
      ]);
      const ri = table(model, 'app', 'ri_index');
      expect([ri.primaryKey, ri.replicaIdentityKey, ri.replicaIdentity]).toEqual([
        null,
        ['code', 'region'],
        'index',
      ]);
      expect(table(model, 'app', 'ri_full').replicaIdentity).toBe('full');
      expect(table(model, 'app', 'cache_entries').unlogged).toBe(true);

      const events = table(model, 'app', 'events');
      expect([events.kind, events.hasData, events.partitionKey]).toEqual([
        'partitioned',
        false,
        'RANGE (created_at)',
      ]);
      expect(table(model, 'app', 'events_2024_click').partitionOf).toEqual({
        schema: 'app',
        name: 'events_2024',
        bound: "FOR VALUES IN ('click', 'tap')",
      });
      expect(table(model, 'app', 'events_2022').columns.map((c) => c.name)).toEqual([
        'payload',
        'kind',
        'user_id',
        'created_at',
        'id',
      ]);
      expect(table(model, 'app', 'cars').inherits).toEqual([{ schema: 'app', name: 'vehicles' }]);

      const documents = table(model, 'app', 'documents');
      expect([documents.rowSecurity, documents.forceRowSecurity]).toEqual([true, true]);
      expect(model.policies.map((p) => p.name)).toEqual(['documents tenant', 'documents_owner']);
      expect(model.views.map((v) => `${v.kind} ${v.name}`)).toEqual([
        'view active_user_names',
        'view active_users',
        'view happy_users',
        'materialized mood_counts',
        'materialized mood_totals',
      ]);
      // A view on a view depends on it, so it is created after it.
      expect(model.views.find((v) => v.name === 'active_user_names')?.dependsOn).toContain(
        'view:app.active_users',
      );
      expect(model.sequences.find((s) => s.name === 'code_seq')).toMatchObject({
        lastValue: '1042',
        isCalled: true,
        start: '1000',
        increment: '7',
        cycle: true,
      });
      expect(model.sequences.find((s) => s.name === 'users_id_seq')?.ownedBy).toEqual({
        schema: 'app',
        table: 'users',
        column: 'id',
      });
      // The model is plain data: it survives the JSON of a manifest unchanged.
      expect(JSON.parse(JSON.stringify(model))).toEqual(model);
    });

    it('restores to a database that reads back as the same model', async () => {
      expect(await readModel(server, restored)).toEqual(model);
    });

    it('restores every row, and the materialized views, in the same text form', async () => {
      await withClient(server, source, (from) =>
        withClient(server, restored, async (to) => {
          const relations = [
            ...model.tables.filter((t) => t.hasData),
            ...model.views.filter((v) => v.kind === 'materialized'),
          ].map((t) => qualify(t.schema, t.name));
          for (const r of relations) {
            expect({ r, rows: await rowsOf(to, r) }).toEqual({ r, rows: await rowsOf(from, r) });
          }
          expect((await rowsOf(from, 'app.all_types')).length).toBe(7);
        }),
      );
    });

    it('generates, for selected tables only, DDL that applies to an empty database', async () => {
      const cases: Array<{ tables: string[]; expect: string[] }> = [
        // Its types, functions, sequence; its own foreign key, trigger, statistics, grants.
        { tables: ['app.users'], expect: ['app.users'] },
        // A partitioned table brings its partitions; the foreign key to app.users is left out.
        {
          tables: ['app.events'],
          expect: [
            'app.events',
            'app.events_2022',
            'app.events_2023',
            'app.events_2024',
            'app.events_2024_click',
            'app.events_2024_other',
            'app.events_default',
          ],
        },
        // A sub-partition brings its ancestors to be attached to, not their other partitions.
        {
          tables: ['app.events_2024_click'],
          expect: ['app.events', 'app.events_2024', 'app.events_2024_click'],
        },
        {
          tables: ['Mixed Schema.Weird "Name"', 'app.documents'],
          expect: ['Mixed Schema.Weird "Name"', 'app.documents'],
        },
        { tables: ['app.cars'], expect: ['app.cars', 'app.vehicles'] },
      ];
      for (const c of cases) {
        const db = await freshDatabase(server, 'schema_one');
        scratch.push(db);
        const ddl = generateDdl(model, { tables: new Set(c.tables) });
        await withClient(server, db, (to) => apply(to, [...ddl.preData, ...ddl.postData]));
        const got = await readModel(server, db);
        expect(got.tables.map((t) => `${t.schema}.${t.name}`)).toEqual(c.expect);
        for (const key of c.tables) {
          const [schema = '', name = ''] = key.split(/\.(.*)/s);
          const want = table(model, schema, name);
          // The selected table itself is exactly as in the source.
          expect(table(got, schema, name)).toEqual(want);
          const onTable = (m: SchemaModel) => ({
            constraints: m.constraints.filter(
              (x) =>
                x.schema === schema &&
                x.table === name &&
                (x.references === undefined ||
                  got.tables.some(
                    (t) => t.schema === x.references?.schema && t.name === x.references.name,
                  )),
            ),
            indexes: m.indexes.filter(
              (x) => x.schema === schema && x.table === name && x.parentIndex === undefined,
            ),
            triggers: m.triggers.filter((x) => x.schema === schema && x.table === name),
            policies: m.policies.filter((x) => x.schema === schema && x.table === name),
          });
          expect(onTable(got)).toEqual(onTable(model));
        }
      }
    });

    it('keeps the column order of an inheritance child whose parent gained columns later', async () => {
      const src = await freshDatabase(server, 'schema_inh_src');
      const dst = await freshDatabase(server, 'schema_inh_dst');
      scratch.push(src, dst);
      await sql(
        server,
        src,
        `CREATE TABLE public.parent (id int NOT NULL, name text DEFAULT 'n', CONSTRAINT parent_id CHECK (id > 0));
         CREATE TABLE public.child (extra int) INHERITS (public.parent);
         ALTER TABLE public.parent ADD COLUMN later text;
         INSERT INTO public.child VALUES (1, 'a', 2, 'l'), (2, NULL, NULL, NULL);`,
      );
      const m = await readModel(server, src);
      // CREATE TABLE ... INHERITS would put "later" before "extra": the difference is named.
      expect(m.unsupported).toEqual([
        expect.objectContaining({ kind: 'inherited column order', name: 'public.child' }),
      ]);
      const ddl = generateDdl(m);
      await withClient(server, src, (from) =>
        withClient(server, dst, async (to) => {
          await apply(to, ddl.preData);
          await copyRows(from, to, m);
          await apply(to, ddl.postData);
          expect(await rowsOf(to, 'public.child')).toEqual(await rowsOf(from, 'public.child'));
          // The child is attached: its rows are seen through the parent.
          const count = 'SELECT count(*) AS n FROM public.parent';
          expect((await to.query(count)).rows).toEqual([{ n: '2' }]);
        }),
      );
      const after = await readModel(server, dst);
      expect(table(after, 'public', 'child').columns.map((c) => c.name)).toEqual([
        'id',
        'name',
        'extra',
        'later',
      ]);
      expect(table(after, 'public', 'child').inherits).toEqual([
        { schema: 'public', name: 'parent' },
      ]);
    });

    it('without ownership, restores everything owned by the restoring role', async () => {
      const db = await freshDatabase(server, 'schema_noown');
      scratch.push(db);
      const ddl = generateDdl(model, { includeOwnership: false });
      expect(ddl.postData.filter((s) => s.kind === 'owner')).toEqual([]);
      await withClient(server, db, (c) => apply(c, [...ddl.preData, ...ddl.postData]));
      // The tests restore as the superuser that also owns the fixture, except one table.
      const expected = structuredClone(model);
      for (const t of expected.tables) if (t.name === 'audit_log') t.owner = server.user;
      expect(await readModel(server, db)).toEqual(expected);
    });

    it('without grants, leaves every privilege at its default', () => {
      const ddl = generateDdl(model, { includeGrants: false });
      const all = [...ddl.preData, ...ddl.postData];
      expect(all.filter((s) => s.kind === 'grant')).toEqual([]);
      expect(all.some((s) => s.kind === 'owner')).toBe(true);
    });

    it('quotes every keyword the server reserves, and the server accepts the quoted name', async () => {
      await withClient(server, 'postgres', async (c) => {
        const words = (
          await c.query<{ word: string; q: string }>(
            'SELECT word, quote_ident(word) AS q FROM pg_get_keywords()',
          )
        ).rows;
        for (const { word, q } of [...words, { word: 'Weird "Name"', q: '"Weird ""Name"""' }]) {
          // Never less quoting than the server's own; more only for words other versions reserve.
          if (q !== word) expect(quoteIdent(word)).toBe(q);
          const r = await c.query<{ v: string }>(`SELECT 1 AS ${quoteIdent(word)}`);
          expect(r.fields[0]?.name).toBe(word);
        }
      });
    });

    it('names what it cannot reproduce: an event trigger and other unsupported kinds', async () => {
      const db = await freshDatabase(server, 'schema_unsup');
      scratch.push(db);
      await sql(
        server,
        db,
        `CREATE FUNCTION public.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
         CREATE EVENT TRIGGER "Audit DDL" ON ddl_command_end EXECUTE FUNCTION public.on_ddl();
         CREATE OPERATOR public.=== (LEFTARG = integer, RIGHTARG = integer, FUNCTION = int4eq);
         CREATE PUBLICATION everything FOR ALL TABLES;
         SELECT lo_from_bytea(0, '\\x00');
         CREATE TABLE public.kept (id integer PRIMARY KEY);`,
      );
      const m = await readModel(server, db);
      expect(m.unsupported).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ kind: 'event trigger', name: '"Audit DDL"' }),
          expect.objectContaining({ kind: 'operator', name: 'public.===(integer,integer)' }),
          expect.objectContaining({ kind: 'publication', name: 'everything' }),
          expect.objectContaining({ kind: 'large objects', name: '1 large object(s)' }),
        ]),
      );
      for (const u of m.unsupported) expect(u.reason).not.toBe('');
      // What is supported is still modelled.
      expect(m.tables.map((t) => t.name)).toEqual(['kept']);
      expect(m.functions.map((f) => f.name)).toEqual(['on_ddl']);
      // Event triggers are per database; drop it so it cannot fire elsewhere.
      await sql(server, db, 'DROP EVENT TRIGGER "Audit DDL"; DROP PUBLICATION everything');
    });
  },
);

/** Schema features of newer versions, by the version that introduced them. */
const VERSION_FEATURES: ReadonlyArray<{ since: number; sql: string }> = [
  {
    since: 17,
    // Identity on a partitioned table: partitions share the parent's sequence.
    sql: `CREATE TABLE public.ident_parted (id bigint GENERATED ALWAYS AS IDENTITY (START WITH 50),
            at date NOT NULL, note text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
          CREATE TABLE public.ident_parted_2024 PARTITION OF public.ident_parted
            FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
          CREATE TABLE public.ident_parted_rest PARTITION OF public.ident_parted DEFAULT;
          INSERT INTO public.ident_parted (at) VALUES ('2024-05-05'), ('2020-01-01');`,
  },
  {
    since: 18,
    // Virtual generated columns, temporal keys, NOT ENFORCED, named NOT NULL (NOT VALID, NO INHERIT).
    sql: `CREATE EXTENSION btree_gist;
          CREATE TABLE public.v18 (id int, during daterange, a int,
            twice int GENERATED ALWAYS AS (a * 2) VIRTUAL, b int, c int,
            PRIMARY KEY (id, during WITHOUT OVERLAPS),
            CONSTRAINT c_positive CHECK (c > 0) NOT ENFORCED);
          INSERT INTO public.v18 (id, during, a, b, c) VALUES (1, '[2024-01-01,2024-02-01)', 2, NULL, -1);
          ALTER TABLE public.v18 ADD CONSTRAINT b_not_null NOT NULL b NOT VALID;
          CREATE TABLE public.v18_parent (x int CONSTRAINT x_nn NOT NULL NO INHERIT,
            y int CONSTRAINT y_named NOT NULL);
          COMMENT ON CONSTRAINT y_named ON public.v18_parent IS 'a named not-null';
          CREATE TABLE public.v18_child (z int) INHERITS (public.v18_parent);
          INSERT INTO public.v18_child VALUES (1, 2, 3);
          CREATE TABLE public.v18_ref (id int, during daterange,
            FOREIGN KEY (id, PERIOD during) REFERENCES public.v18 (id, PERIOD during) NOT ENFORCED);
          CREATE DOMAIN public.d18 AS int CONSTRAINT d18_nn NOT NULL;`,
  },
];

describe.each(servers.filter((s) => s.major >= 17).map((s) => [s.major, s] as const))(
  'schema features of newer versions on PostgreSQL %i',
  (major, server: TestServer) => {
    it('restore to the same model and rows', async () => {
      const source = await freshDatabase(server, 'features_src');
      const restored = await freshDatabase(server, 'features_dst');
      try {
        for (const f of VERSION_FEATURES) if (major >= f.since) await sql(server, source, f.sql);
        const model = await readModel(server, source);
        expect(model.tables.length).toBeGreaterThan(2);
        const ddl = generateDdl(model);
        await withClient(server, source, (from) =>
          withClient(server, restored, async (to) => {
            await apply(to, ddl.preData);
            await copyRows(from, to, model);
            await apply(to, ddl.postData);
            for (const t of model.tables.filter((x) => x.hasData)) {
              const r = qualify(t.schema, t.name);
              expect({ r, rows: await rowsOf(to, r) }).toEqual({ r, rows: await rowsOf(from, r) });
            }
          }),
        );
        expect(await readModel(server, restored)).toEqual(model);
      } finally {
        for (const db of [source, restored]) {
          await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
        }
      }
    });
  },
);

const oldest = servers[0];
describe.each(
  servers
    .filter((s) => oldest !== undefined && s.major > oldest.major)
    .map((s) => [oldest?.major, s.major, s] as const),
)('schema from PostgreSQL %i restored on PostgreSQL %i', (_from, _to, server: TestServer) => {
  it('applies, with the same tables, columns and rows', async () => {
    if (oldest === undefined) throw new Error('no test server');
    const source = await freshDatabase(oldest, 'upgrade_src');
    const restored = await freshDatabase(server, 'upgrade_dst');
    try {
      await sql(oldest, source, await readFile(FIXTURE, 'utf8'));
      const model = await readModel(oldest, source);
      const ddl = generateDdl(model);
      await withClient(oldest, source, (from) =>
        withClient(server, restored, async (to) => {
          await apply(to, ddl.preData);
          await copyRows(from, to, model);
          await apply(to, ddl.postData);
        }),
      );
      const after = await readModel(server, restored);
      const shape = (m: SchemaModel) =>
        m.tables.map((t) => ({
          table: `${t.schema}.${t.name}`,
          columns: t.columns.map((c) => [
            c.name,
            c.type,
            c.notNull,
            c.default,
            c.generated,
            c.identity,
          ]),
          key: t.primaryKey,
          partitionOf: t.partitionOf,
        }));
      expect(shape(after)).toEqual(shape(model));
      expect(after.unsupported).toEqual([]);
      // Rows read back identically on the newer server: text forms are stable across versions.
      await withClient(oldest, source, (from) =>
        withClient(server, restored, async (to) => {
          for (const t of model.tables.filter((x) => x.hasData)) {
            const r = qualify(t.schema, t.name);
            expect({ r, rows: await rowsOf(to, r) }).toEqual({ r, rows: await rowsOf(from, r) });
          }
        }),
      );
    } finally {
      await sql(oldest, 'postgres', `DROP DATABASE IF EXISTS ${source} WITH (FORCE)`);
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${restored} WITH (FORCE)`);
    }
  });
});

const pg15 = servers.filter((s) => s.major === 15);

describe.each(pg15.map((s) => [s.major, s] as const))(
  'schema compared with pg_dump on PostgreSQL %i',
  (_major, server: TestServer) => {
    it('gives the same pg_dump --schema-only for the source and the restored database', async () => {
      if (!existsSync(PG_DUMP)) {
        throw new Error(
          `${PG_DUMP} is missing: this test compares with Debian's pg_dump 15 (apt-get install postgresql-client-15)`,
        );
      }
      const source = await freshDatabase(server, 'dump_src');
      const restored = await freshDatabase(server, 'dump_dst');
      try {
        await sql(server, source, await readFile(FIXTURE, 'utf8'));
        const model = await readModel(server, source);
        const ddl = generateDdl(model);
        await withClient(server, restored, (c) => apply(c, [...ddl.preData, ...ddl.postData]));
        const [a, b] = await Promise.all([
          schemaDump(server, source),
          schemaDump(server, restored),
        ]);
        expect(a).toContain('CREATE TABLE app.all_types');
        expect(b).toBe(a);
      } finally {
        for (const db of [source, restored]) {
          await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
        }
      }
    });
  },
);
