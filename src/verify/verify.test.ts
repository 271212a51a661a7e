import { describe, expect, it } from 'vitest';
import type { SchemaModel } from '../pg/schema/model.js';
import { diffSchemas } from './verify.js';

function model(over: Partial<Record<keyof SchemaModel, unknown>> = {}): SchemaModel {
  return {
    version: 1,
    serverVersionNum: 170010,
    schemas: [{ name: 'public' }],
    extensions: [],
    collations: [],
    types: [],
    functions: [],
    aggregates: [],
    tables: [{ schema: 'public', name: 't', columns: [{ name: 'id', type: 'integer' }] }],
    sequences: [],
    constraints: [],
    indexes: [{ schema: 'public', name: 't_x', table: 't', definition: 'CREATE INDEX …' }],
    views: [],
    triggers: [],
    rules: [],
    policies: [],
    statistics: [],
    unsupported: [],
    ...over,
  } as unknown as SchemaModel;
}

describe('diffSchemas', () => {
  it('finds nothing between equal models, whatever the key order, server minor or unsupported list', () => {
    const a = model();
    const b = model({
      serverVersionNum: 170011,
      unsupported: [{ kind: 'event trigger', name: 'x', reason: 'r' }],
      tables: [{ name: 't', columns: [{ type: 'integer', name: 'id' }], schema: 'public' }],
    });
    expect(diffSchemas(a, b)).toEqual([]);
  });

  it('skips what an older snapshot did not record, and compares it when recorded', () => {
    const database = { owner: 'o', acl: null, connectionLimit: -1, settings: [] };
    const restored = model({ database, initialPrivilegesChanged: [] });
    expect(diffSchemas(model(), restored)).toEqual([]);
    expect(
      diffSchemas(model({ database: { ...database, connectionLimit: 5 } }), restored).map(
        (p) => p.message,
      ),
    ).toEqual(['schema: database differs after restore']);
  });

  it('names a missing, a changed and an extra object by kind and name', () => {
    const a = model();
    const b = model({
      indexes: [],
      tables: [{ schema: 'public', name: 't', columns: [{ name: 'id', type: 'bigint' }] }],
      views: [{ schema: 'public', name: 'v', kind: 'view' }],
    });
    const messages = diffSchemas(a, b).map((p) => p.message);
    expect(messages).toContain('schema: index public.t_x on t differs or is missing after restore');
    expect(messages).toContain('schema: table public.t differs or is missing after restore');
    expect(messages).toContain(
      'schema: view public.v appears after restore but was not in the snapshot',
    );
  });

  it('excuses a table the backup said is restored otherwise, and what hangs on it, not others', () => {
    const child = { schema: 'public', name: 'ic', columns: [{ name: 'b' }, { name: 'id' }] };
    const a = model({
      tables: [...model().tables, child],
      constraints: [{ schema: 'public', name: 'ic_b', table: 'ic', local: false }],
      unsupported: [{ kind: 'inherited column order', name: 'public.ic', reason: 'r' }],
    });
    const b = model({
      tables: [
        { schema: 'public', name: 't', columns: [{ name: 'id', type: 'bigint' }] },
        { ...child, columns: [{ name: 'id' }, { name: 'b' }] },
      ],
      constraints: [{ schema: 'public', name: 'ic_b', table: 'ic', local: true }],
    });
    expect(diffSchemas(a, b).map((p) => p.message)).toEqual([
      'schema: table public.t differs or is missing after restore',
      'schema: table public.t appears after restore but was not in the snapshot',
    ]);
  });
});
