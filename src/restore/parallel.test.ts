import { describe, expect, it } from 'vitest';
import type { PgClient } from '../pg/connect.js';
import type { DdlStatement } from '../pg/schema/model.js';
import { loadAndIndex, statementTables } from './parallel.js';

describe('post-data statement classification', () => {
  it('names the tables of index, key and foreign-key statements', () => {
    expect(statementTables('CREATE INDEX i ON public.files USING btree (tenant_id)')).toEqual([
      'public.files',
    ]);
    expect(
      statementTables('CREATE UNIQUE INDEX "Odd ""i""" ON "My Schema"."T 1" USING btree (a)'),
    ).toEqual(['"My Schema"."T 1"']);
    expect(
      statementTables('ALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (id)'),
    ).toEqual(['public.t']);
    expect(
      statementTables('ALTER TABLE ONLY public.t ADD CONSTRAINT ex EXCLUDE USING gist (r WITH &&)'),
    ).toEqual(['public.t']);
    expect(
      statementTables(
        'ALTER TABLE ONLY public.c ADD CONSTRAINT f FOREIGN KEY (p) REFERENCES public.p(id) DEFERRABLE',
      ),
    ).toEqual(['public.c', 'public.p']);
  });

  it('treats everything else as a barrier, including indexes on partitioned parents', () => {
    for (const sql of [
      'CREATE INDEX i ON ONLY public.parted USING btree (a)',
      'ALTER INDEX public.i ATTACH PARTITION public.i_1',
      'CREATE TRIGGER t AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION f()',
      "SELECT pg_catalog.setval('public.s', 5, true)",
      'COMMENT ON TABLE public.t IS $$x$$',
      'ALTER TABLE public.t ADD CONSTRAINT c CHECK (a > 0)',
    ]) {
      expect(statementTables(sql), sql).toBeUndefined();
    }
  });
});

describe('loading and index building side by side', () => {
  /** A connection that takes `ms(sql)` per statement and records when each ran. */
  const log: Array<{ what: string; conn: number; start: number; end: number }> = [];
  const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
  const conn = (n: number, ms: (sql: string) => number, fail?: string) =>
    ({
      async query(sql: string) {
        const start = performance.now();
        await sleep(ms(sql));
        if (fail !== undefined && sql.includes(fail)) throw new Error(`refused: ${fail}`);
        log.push({ what: sql, conn: n, start, end: performance.now() });
        return { rows: [], rowCount: 0 };
      },
    }) as unknown as PgClient;
  const table = (name: string, bytes: number) => ({ schema: 'public', name, bytes });
  const ddl = (sql: string): DdlStatement => ({ kind: 'index', name: 'x', sql }) as DdlStatement;
  const at = (what: string) => log.find((x) => x.what.includes(what))!;

  it('starts a table’s keys while another loads, keys before foreign keys, one statement per table at a time', async () => {
    log.length = 0;
    const loadMs: Record<string, number> = { big: 500, parent: 20, child: 20 };
    const statements = [
      ddl('ALTER TABLE ONLY public.parent ADD CONSTRAINT parent_pkey PRIMARY KEY (id)'),
      ddl('ALTER TABLE ONLY public.child ADD CONSTRAINT child_pkey PRIMARY KEY (id)'),
      ddl('CREATE INDEX child_a ON public.child USING btree (a)'),
      ddl('ALTER TABLE ONLY public.big ADD CONSTRAINT big_pkey PRIMARY KEY (id)'),
      ddl(
        'ALTER TABLE ONLY public.child ADD CONSTRAINT child_p FOREIGN KEY (p) REFERENCES public.parent(id)',
      ),
      ddl(
        'ALTER TABLE ONLY public.big ADD CONSTRAINT big_p FOREIGN KEY (p) REFERENCES public.parted(id)',
      ),
    ];
    const conns = [0, 1].map((n) => conn(n, () => 15));
    await loadAndIndex({
      conns,
      tables: [table('parent', 10), table('big', 1000), table('child', 20)],
      statements,
      async load(c, t) {
        const start = performance.now();
        await sleep(loadMs[t.name]!);
        log.push({ what: `load ${t.name}`, conn: conns.indexOf(c), start, end: performance.now() });
      },
    });
    // The big table loads on one connection the whole time; the other loads
    // the small ones and builds their keys meanwhile.
    expect(at('parent_pkey').start).toBeLessThan(at('load big').end);
    expect(at('child_pkey').start).toBeLessThan(at('load big').end);
    for (const s of statements) {
      const run = at(s.sql);
      for (const t of statementTables(s.sql)!.map((x) => x.slice('public.'.length))) {
        // Never before the table is loaded (a table not loaded here: after every load).
        const loaded = log.find((x) => x.what === `load ${t}`)?.end ?? at('load big').end;
        expect(run.start, `${s.sql} after load ${t}`).toBeGreaterThanOrEqual(loaded);
      }
    }
    expect(at('child_p FOREIGN').start).toBeGreaterThanOrEqual(at('parent_pkey').end);
    expect(at('child_p FOREIGN').start).toBeGreaterThanOrEqual(at('child_a').end);
    expect(at('child_a').start).toBeGreaterThanOrEqual(at('child_pkey').end);
  });

  it('stops at the first failure and throws it', async () => {
    log.length = 0;
    const conns = [conn(0, () => 5, 'bad'), conn(1, () => 5, 'bad')];
    await expect(
      loadAndIndex({
        conns,
        tables: [table('t', 1), table('u', 1)],
        statements: [
          ddl('CREATE INDEX bad ON public.t USING btree (a)'),
          ddl('CREATE INDEX later ON public.t USING btree (b)'),
        ],
        load: () => sleep(5),
      }),
    ).rejects.toThrow(/creating index x failed: refused: bad/);
    expect(log.some((x) => x.what.includes('later'))).toBe(false);
  });
});
