import { describe, expect, it } from 'vitest';
import { generateDdl } from './ddl.js';
import type { ColumnModel, SchemaModel, TableModel, ViewModel } from './model.js';

function model(parts: Partial<SchemaModel>): SchemaModel {
  return {
    version: 1,
    serverVersionNum: 170000,
    schemas: [],
    extensions: [],
    collations: [],
    types: [],
    functions: [],
    aggregates: [],
    tables: [],
    sequences: [],
    constraints: [],
    indexes: [],
    views: [],
    triggers: [],
    rules: [],
    policies: [],
    statistics: [],
    unsupported: [],
    ...parts,
  };
}

function tableModel(
  name: string,
  columns: ColumnModel[],
  extra: Partial<TableModel> = {},
): TableModel {
  return {
    schema: 'public',
    name,
    kind: 'table',
    unlogged: false,
    columns,
    primaryKey: null,
    replicaIdentityKey: null,
    hasData: true,
    inherits: [],
    checks: [],
    replicaIdentity: 'default',
    rowSecurity: false,
    forceRowSecurity: false,
    options: [],
    owner: 'app',
    acl: null,
    dependsOn: [],
    ...extra,
  };
}

function view(name: string, definition: string, dependsOn: string[]): ViewModel {
  return {
    kind: 'view',
    schema: 'public',
    name,
    definition,
    options: [],
    columns: [],
    populated: false,
    owner: 'app',
    acl: null,
    dependsOn,
  };
}

const sqlOf = (list: { sql: string }[]) => list.map((s) => s.sql);

describe('generateDdl', () => {
  it('orders by dependency, not by name: a view on a view comes after it', () => {
    const m = model({
      tables: [tableModel('t', [{ name: 'a', type: 'integer', notNull: false }])],
      views: [
        view('a_outer', ' SELECT b_inner.a FROM public.b_inner;', ['view:public.b_inner']),
        view('b_inner', ' SELECT t.a FROM public.t;', ['table:public.t']),
      ],
    });
    const post = sqlOf(generateDdl(m, { includeOwnership: false }).postData);
    const inner = post.findIndex((s) => s.startsWith('CREATE VIEW public.b_inner'));
    const outer = post.findIndex((s) => s.startsWith('CREATE VIEW public.a_outer'));
    expect(inner).toBeGreaterThan(-1);
    expect(outer).toBeGreaterThan(inner);
    expect(post[outer]).toBe(
      'CREATE VIEW public.a_outer AS\n SELECT b_inner.a FROM public.b_inner',
    );
  });

  it('moves a function into pre-data when a column default needs it', () => {
    const fn = {
      kind: 'function' as const,
      schema: 'public',
      name: 'next_code',
      identityArguments: '',
      signature: '',
      definition:
        'CREATE OR REPLACE FUNCTION public.next_code() RETURNS text LANGUAGE sql AS $$ SELECT 1::text $$',
      owner: 'app',
      acl: null,
      dependsOn: [],
    };
    const unused = {
      ...fn,
      name: 'unused',
      definition: fn.definition.replace('next_code', 'unused'),
    };
    const m = model({
      functions: [fn, unused],
      tables: [
        tableModel(
          't',
          [{ name: 'code', type: 'text', notNull: true, default: 'public.next_code()' }],
          {
            dependsOn: ['function:public.next_code()'],
          },
        ),
      ],
    });
    const { preData, postData } = generateDdl(m, { includeOwnership: false });
    const pre = sqlOf(preData);
    expect(pre[0]).toBe('SET check_function_bodies = false');
    expect(pre.findIndex((s) => s.includes('FUNCTION public.next_code()'))).toBeLessThan(
      pre.findIndex((s) => s.startsWith('CREATE TABLE public.t')),
    );
    expect(pre).toContain(
      'CREATE TABLE public.t (\n    code text DEFAULT public.next_code() NOT NULL\n)',
    );
    // A function nothing before the data needs waits until after it.
    expect(sqlOf(postData).some((s) => s.includes('FUNCTION public.unused()'))).toBe(true);
    expect(pre.some((s) => s.includes('unused'))).toBe(false);
  });

  it('quotes names that need it everywhere it writes them', () => {
    const m = model({
      tables: [
        tableModel(
          'Order Items',
          [{ name: 'select', type: 'integer', notNull: false, comment: "it's" }],
          {
            schema: 'My "Schema"',
            acl: [
              { grantee: 'Reader Role', grantor: 'app', privileges: ['SELECT'], grantable: [] },
            ],
          },
        ),
      ],
    });
    const all = sqlOf([...generateDdl(m).preData, ...generateDdl(m).postData]);
    expect(all).toContain('CREATE TABLE "My ""Schema"""."Order Items" (\n    "select" integer\n)');
    expect(all).toContain(`COMMENT ON COLUMN "My ""Schema"""."Order Items"."select" IS 'it''s'`);
    expect(all).toContain('ALTER TABLE "My ""Schema"""."Order Items" OWNER TO app');
    expect(all).toContain('GRANT SELECT ON TABLE "My ""Schema"""."Order Items" TO "Reader Role"');
  });

  it('for selected tables, leaves out a foreign key whose referenced table is not selected', () => {
    const id: ColumnModel = { name: 'id', type: 'integer', notNull: true };
    const fk = (table: string, references: string) => ({
      schema: 'public',
      table,
      name: `${table}_${references}_fk`,
      type: 'foreign-key' as const,
      definition: `FOREIGN KEY (id) REFERENCES public.${references}(id)`,
      references: { schema: 'public', name: references },
      dependsOn: [`table:public.${references}`],
    });
    const m = model({
      tables: [tableModel('a', [id]), tableModel('b', [id]), tableModel('c', [id])],
      constraints: [fk('a', 'b'), fk('a', 'a')],
    });
    const { preData, postData } = generateDdl(m, { tables: new Set(['public.a']) });
    const all = sqlOf([...preData, ...postData]);
    expect(all.filter((s) => s.startsWith('CREATE TABLE')).length).toBe(1);
    expect(all.some((s) => s.includes('a_a_fk FOREIGN KEY (id) REFERENCES public.a(id)'))).toBe(
      true,
    );
    expect(all.some((s) => s.includes('REFERENCES public.b'))).toBe(false);
    expect(() => generateDdl(m, { tables: new Set(['public.nope']) })).toThrow(/public\.nope/);
  });

  it('sets sequence values and refreshes materialized views last', () => {
    const m = model({
      tables: [tableModel('t', [{ name: 'a', type: 'integer', notNull: false }])],
      sequences: [
        {
          schema: 'public',
          name: 's',
          lastValue: '9223372036854775807',
          isCalled: true,
          dataType: 'bigint',
          start: '1',
          increment: '1',
          min: '1',
          max: '9223372036854775807',
          cache: '1',
          cycle: false,
          unlogged: false,
          owner: 'app',
          acl: null,
          dependsOn: [],
        },
      ],
      views: [
        {
          ...view('m', ' SELECT t.a FROM public.t;', ['table:public.t']),
          kind: 'materialized',
          populated: true,
        },
      ],
    });
    const post = sqlOf(generateDdl(m).postData);
    expect(post.slice(-2)).toEqual([
      "SELECT pg_catalog.setval('public.s', 9223372036854775807, true)",
      'REFRESH MATERIALIZED VIEW public.m',
    ]);
  });
});
