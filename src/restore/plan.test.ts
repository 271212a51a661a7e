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

  it('takes a partitioned table for its partitions, at any depth', () => {
    const t = (schema: string, name: string) => ({ schema, name }) as unknown as TableSnapshot;
    const m = (name: string, kind: string, parent?: string) => ({
      schema: 'app',
      name,
      kind,
      partitionOf: parent === undefined ? undefined : { schema: 'app', name: parent, bound: '' },
    });
    const manifest = {
      id: 's',
      tables: ['events_2023', 'events_2024_click', 'events_2024_other', 'users'].map((n) =>
        t('app', n),
      ),
      schema: {
        tables: [
          m('events', 'partitioned'),
          m('events_2023', 'table', 'events'),
          m('events_2024', 'partitioned', 'events'),
          m('events_2024_click', 'table', 'events_2024'),
          m('events_2024_other', 'table', 'events_2024'),
          m('users', 'table'),
          m('empty', 'partitioned'),
        ],
      },
    } as unknown as SnapshotManifest<SchemaModel>;
    const names = (p: string[]) => selectTables(manifest, p).map((x) => x.name);
    expect(names(['events'])).toEqual(['events_2023', 'events_2024_click', 'events_2024_other']);
    expect(names(['app.events_2024'])).toEqual(['events_2024_click', 'events_2024_other']);
    expect(names(['"events_2024"', 'users'])).toEqual([
      'events_2024_click',
      'events_2024_other',
      'users',
    ]);
    expect(names(['EVENTS_2023'])).toEqual(['events_2023']);
    expect(() => names(['empty'])).toThrow(
      '"empty" is a partitioned table with no partition in snapshot s: it holds no rows to restore',
    );
  });
});
