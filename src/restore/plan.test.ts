import { describe, expect, it } from 'vitest';
import type { SchemaModel } from '../pg/schema/model.js';
import type { SnapshotManifest, TableSnapshot } from '../repo/snapshots.js';
import { selectTables } from './plan.js';

describe('choosing tables', () => {
  it('selects tables for restore and undo as written, "quoted", or folded', () => {
    const t = (schema: string, name: string) => ({ schema, name }) as unknown as TableSnapshot;
    const manifest = {
      id: 's',
      tables: [t('public', 'Mixed Case'), t('public', 'orders'), t('Sales', 'Orders')],
    } as unknown as SnapshotManifest<SchemaModel>;
    const names = (p: string[]) => selectTables(manifest, p).map((x) => `${x.schema}.${x.name}`);
    expect(names(['Mixed Case'])).toEqual(['public.Mixed Case']);
    expect(names(['"Mixed Case"'])).toEqual(['public.Mixed Case']);
    expect(names(['Orders'])).toEqual(['Sales.Orders']);
    expect(names(['ORDERS'])).toEqual(['public.orders']);
    expect(names(['"Sales"."Orders"'])).toEqual(['Sales.Orders']);
    expect(() => names(['"orders2"'])).toThrow(/no table in snapshot s matches/);
  });
});
