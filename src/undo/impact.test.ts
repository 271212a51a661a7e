import { describe, expect, it } from 'vitest';
import { DamagedError, UsageError } from '../errors.js';
import { type ChangeColumn, ChangeLog, type ChangeRecord, lsnValue } from '../repo/changelog.js';
import { ChunkStore } from '../repo/chunks.js';
import { Repository } from '../repo/repository.js';
import {
  type ChunkRef,
  type SnapshotManifest,
  SnapshotStore,
  type TableSnapshot,
} from '../repo/snapshots.js';
import { MemoryStorage } from '../storage/memory.js';
import {
  compareValues,
  type ImpactReport,
  type ImpactRow,
  impactCsv,
  impactReport,
  parseColumnName,
} from './impact.js';

// ---------------------------------------------------------------------------
// A repository built by hand: a snapshot of public.files (id bigint key,
// tenant_id, kind) in three chunks, public.events (no key, REPLICA IDENTITY
// FULL) and public.tenants (no tenant_id column), and a change log.

const FILES: ChangeColumn[] = [
  ['id', 20, -1, true],
  ['tenant_id', 20, -1, false],
  ['kind', 25, -1, false],
];
// Under REPLICA IDENTITY FULL every column is flagged as part of the identity.
const EVENTS: ChangeColumn[] = [
  ['tenant_id', 20, -1, true],
  ['kind', 25, -1, true],
];
const TENANTS: ChangeColumn[] = [
  ['id', 20, -1, true],
  ['name', 25, -1, false],
];
const F = 16500;
const E = 16501;
const T = 16502;

/** Builds transactions: each gets a commit LSN, end LSN and a time 1 s apart (10:00:01, 10:00:02, …). */
class LogBuilder {
  records: ChangeRecord[] = [
    ['R', F, 'public', 'files', 'd', FILES],
    ['R', E, 'public', 'events', 'f', EVENTS],
    ['R', T, 'public', 'tenants', 'd', TENANTS],
  ];
  readonly times: string[] = [];
  private n = 0;
  tx(xid: number, ...changes: ChangeRecord[]): this {
    this.n++;
    const lsn = `0/${(0x2000 + this.n * 0x100).toString(16).toUpperCase()}`;
    const end = `0/${(0x2000 + this.n * 0x100 + 0x10).toString(16).toUpperCase()}`;
    const time = `2026-11-21T10:00:${String(this.n).padStart(2, '0')}.000001Z`;
    this.times.push(time);
    this.records.push(['B', xid, lsn, time], ...changes, ['C', lsn, end, time]);
    return this;
  }
  heartbeat(at: string): this {
    this.records.push(['H', '0/9000', at]);
    return this;
  }
}

const SNAPSHOT_ID = '20261121-095900-abcd';

async function fixture(log: LogBuilder): Promise<Repository> {
  const storage = new MemoryStorage();
  const repo = await Repository.init(storage);
  const chunks = new ChunkStore(storage);
  const put = async (rows: string[], keyed = true): Promise<ChunkRef> => {
    const content = Buffer.from(`${rows.join('\n')}\n`);
    const { id, storedSize } = await chunks.put(content);
    const key = (r: string) => (keyed ? [r.split('\t')[0]!] : null);
    return {
      id,
      rows: rows.length,
      size: content.length,
      stored: storedSize,
      first: key(rows[0]!),
      last: key(rows[rows.length - 1]!),
    };
  };
  const table = (
    name: string,
    columns: string[],
    key: string[],
    cs: ChunkRef[],
  ): TableSnapshot => ({
    schema: 'public',
    name,
    columns,
    key,
    keyKind: key.length > 0 ? 'primary' : 'none',
    boundaryBits: 1,
    rows: cs.reduce((n, c) => n + c.rows, 0),
    bytes: 0,
    storedBytes: 0,
    chunks: cs,
  });
  const files = table(
    'files',
    ['id', 'tenant_id', 'kind'],
    ['id'],
    [
      await put(['1\t1\tinvoice', '2\t1\tavatar', '3\t2\tinvoice']),
      await put(['10\t2\tavatar', '11\t3\tinvoice', '12\t3\texport']),
      await put(['20\t4\tinvoice', '21\t4\tavatar']),
    ],
  );
  const events = table(
    'events',
    ['tenant_id', 'kind'],
    [],
    [await put(['1\tlogin', '2\tsend', '2\topen'], false)],
  );
  const tenants = table('tenants', ['id', 'name'], ['id'], [await put(['1\tone', '2\ttwo'])]);
  const at = '2026-11-21T09:59:00.000Z';
  const manifest: SnapshotManifest = {
    format: 'flashback-snapshot',
    version: 1,
    id: SNAPSHOT_ID,
    target: 'prod',
    database: 'app',
    encoding: 'UTF8',
    collate: 'C',
    ctype: 'C',
    systemIdentifier: '1',
    host: 'h',
    serverVersion: '17.10',
    serverVersionNum: 170010,
    lsn: '0/2000',
    consistentAt: '2026-11-21T09:59:00.000001Z',
    startedAt: at,
    finishedAt: at,
    schema: {
      tables: [
        {
          schema: 'public',
          name: 'files',
          columns: [
            { name: 'id', type: 'bigint' },
            { name: 'tenant_id', type: 'bigint' },
            { name: 'kind', type: 'text' },
          ],
        },
      ],
    },
    tables: [files, events, tenants],
    totals: { tables: 3, rows: 13, bytes: 0, storedBytes: 0, newChunks: 5, newBytes: 0 },
  };
  await new SnapshotStore(storage).commit(manifest);
  const changes = new ChangeLog(storage, 'prod');
  await changes.writeInfo({
    format: 'flashback-capture',
    version: 1,
    target: 'prod',
    slot: 'flashback_prod',
    publication: 'flashback',
    systemIdentifier: '1',
    database: 'app',
    startLsn: '0/2000',
    created: '2026-11-21T09:58:00.000Z',
  });
  // Two segments, cut between transactions, the second repeating the relation records.
  let cut = Math.floor(log.records.length / 2);
  while (cut < log.records.length && log.records[cut]![0] !== 'B') cut++;
  const first = log.records.slice(0, cut);
  const committed = (rs: readonly ChangeRecord[], fallback: bigint) => {
    let last = fallback;
    for (const r of rs) if (r[0] === 'C') last = lsnValue(r[2]);
    return last;
  };
  const c1 = committed(first, 0x2000n);
  await changes.writeSegment(1, c1, first);
  const second = [...log.records.filter((r) => r[0] === 'R'), ...log.records.slice(cut)];
  await changes.writeSegment(2, committed(second, c1), second);
  return repo;
}

const del = (id: string): ChangeRecord => ['D', F, [id, null, null], null];
const ins = (id: string, tenant: string, kind = 'k'): ChangeRecord => ['I', F, [id, tenant, kind]];
const upd = (id: string, tenant: string, kind = 'k'): ChangeRecord => [
  'U',
  F,
  null,
  null,
  [id, tenant, kind],
];

/** Counts without the times, keyed `table value`. */
function counts(rows: readonly ImpactRow[]): Record<string, number[]> {
  return Object.fromEntries(
    rows.map((r) => [`${r.table} ${r.value}`, [r.inserted, r.updated, r.deleted, r.truncated]]),
  );
}

/** Deletes and updates the log carries only by key, resolved from the snapshot, the log before the window, or the window. */
function story(): LogBuilder {
  return (
    new LogBuilder()
      // Before the window (opens 10:00:02.5): row 12 moves from tenant 3 to 5; row 30 appears.
      .tx(700, upd('12', '5', 'export'))
      .tx(701, ins('30', '6'))
      // The window.
      .tx(702, del('1')) // tenant 1, from the snapshot's first chunk
      .tx(703, del('12')) // tenant 5: the log before the window
      .tx(704, ins('31', '7'), upd('31', '7', 'changed'), del('30')) // 30: tenant 6
      .tx(705, ins('40', '8'))
      .tx(706, del('40')) // tenant 8: inserted in the window
      .tx(707, upd('10', '9', 'avatar'), upd('11', '3', 'pdf')) // 10 moves 2 → 9
      .tx(708, upd('11', '3', 'png')) // the same row again: still one updated row
      .tx(
        709,
        ['D', E, null, ['1', 'login']],
        ['I', E, ['2', 'click']],
        ['U', E, null, ['2', 'send'], ['3', 'send']],
      )
      .tx(710, ['U', T, null, null, ['1', 'renamed']])
      .tx(711, del('2')) // after the window
      .heartbeat('2026-11-21T10:00:20.000000Z')
  );
}

const WINDOW = { kind: 'time', at: '2026-11-21T10:00:02.500000Z' } as const;
const UNTIL = '2026-11-21T10:00:11.500000Z'; // 702 … 710

describe('impactReport', () => {
  it('counts rows per value and table, taking deleted rows’ values from history', async () => {
    const repo = await fixture(story());
    const r = await impactReport({ repo, column: 'tenant_id', since: WINDOW, until: UNTIL });
    expect(counts(r.rows)).toEqual({
      // [inserted, updated, deleted, truncated]
      'public.files 1': [0, 0, 1, 0],
      'public.events 1': [0, 0, 1, 0],
      'public.events 2': [1, 1, 0, 0],
      'public.files 2': [0, 1, 0, 0],
      'public.events 3': [0, 1, 0, 0],
      'public.files 3': [0, 1, 0, 0],
      'public.files 5': [0, 0, 1, 0],
      'public.files 6': [0, 0, 1, 0],
      'public.files 7': [1, 1, 0, 0],
      'public.files 8': [1, 0, 1, 0],
      'public.files 9': [0, 1, 0, 0],
    });
    // Sorted by value numerically, then table.
    expect(r.rows.map((x) => `${x.value} ${x.table}`).slice(0, 4)).toEqual([
      '1 public.events',
      '1 public.files',
      '2 public.events',
      '2 public.files',
    ]);
    const eight = r.rows.find((x) => x.value === '8')!;
    expect([eight.first, eight.last]).toEqual([
      '2026-11-21T10:00:06.000001Z',
      '2026-11-21T10:00:07.000001Z',
    ]);
    // Keys 1, 10, 11, 12 are in chunks 1 and 2; 30, 31, 40 in none: the third chunk is not read.
    expect(r.lookup).toEqual({ snapshot: SNAPSHOT_ID, chunksRead: 2, keys: 7 });
    expect(r.withoutColumn).toEqual([{ table: 'public.tenants', changes: 1 }]);
    expect(r.notes).toEqual([
      expect.stringMatching(/^no column tenant_id in public\.tenants \(1 change\)/),
    ]);
    expect(r).toMatchObject({
      target: 'prod',
      column: 'tenant_id',
      since: WINDOW.at,
      sinceSnapshot: null,
      until: UNTIL,
      transactions: 9,
      changes: 13,
      truncates: [],
      unresolved: [],
      logReaches: '2026-11-21T10:00:12.000001Z', // 711, past the window
    });
  });

  it('counts a row whose key changed once (also when moved twice), and a key taken again by a new row as another', async () => {
    const move = (from: string, to: string, tenant: string): ChangeRecord => [
      'U',
      F,
      [from, null, null],
      null,
      [to, tenant, 'k'],
    ];
    const log = new LogBuilder()
      .tx(800, upd('20', '4', 'changed')) // row 20 updated, then renumbered
      .tx(801, move('20', '2020', '4'))
      .tx(802, move('21', '2021', '4')) // row 21 moved twice
      .tx(803, move('2021', '3021', '4'))
      .tx(804, ins('20', '4'), upd('20', '4', 'again')) // a new row under the old key 20
      .heartbeat('2026-11-21T10:00:20.000000Z');
    const repo = await fixture(log);
    const r = await impactReport({
      repo,
      column: 'tenant_id',
      since: { kind: 'time', at: '2026-11-21T10:00:00.500000Z' },
      until: '2026-11-21T10:00:05.500000Z',
    });
    // Updated: old row 20, row 21, and the new row 20: three rows, not five or four.
    expect(counts(r.rows)).toEqual({ 'public.files 4': [1, 3, 0, 0] });
  });

  it('without --until, ends where the log does when that is under a minute short of now', async () => {
    const repo = await fixture(story());
    const asOf = (until: string) =>
      impactReport({ repo, column: 'tenant_id', since: WINDOW, until, untilIsNow: true });
    // The log ends at 10:00:20 (its last heartbeat): 20 s before now is capture's usual lag.
    const soon = await asOf('2026-11-21T10:00:40.000000Z');
    expect(soon.until).toBe('2026-11-21T10:00:20.000000Z');
    expect(soon.notes.filter((n) => n.includes('the change log reaches'))).toEqual([]);
    // 100 s short: capture may have stopped; the report says so and keeps the window asked for.
    const late = await asOf('2026-11-21T10:02:00.000000Z');
    expect(late.until).toBe('2026-11-21T10:02:00.000000Z');
    expect(late.notes).toContain(
      'the change log reaches only 2026-11-21T10:00:20.000000Z: changes committed after that, up to 2026-11-21T10:02:00.000000Z, are not in it (is capture running?)',
    );
    // An --until given is kept, and a log short of it is always said.
    const given = await impactReport({
      repo,
      column: 'tenant_id',
      since: WINDOW,
      until: '2026-11-21T10:00:40.000000Z',
    });
    expect(given.until).toBe('2026-11-21T10:00:40.000000Z');
    expect(given.notes.some((n) => n.startsWith('the change log reaches only'))).toBe(true);
    expect(soon.rows).toEqual(given.rows);
  });

  it('narrows to --table, and names a table without the column once', async () => {
    const repo = await fixture(story());
    const r = await impactReport({
      repo,
      column: 'TENANT_ID',
      tables: ['files', 'public.tenants'],
      since: WINDOW,
      until: UNTIL,
    });
    expect(new Set(r.rows.map((x) => x.table))).toEqual(new Set(['public.files']));
    expect(r.rows).toHaveLength(8);
    expect(r.withoutColumn).toEqual([{ table: 'public.tenants', changes: 1 }]);
    // A table named but unchanged and without the column is listed too.
    const quiet = await impactReport({
      repo,
      column: 'tenant_id',
      tables: ['tenants'],
      since: { kind: 'time', at: '2026-11-21T10:00:11.200000Z' },
      until: '2026-11-21T10:00:11.500000Z',
    });
    expect(quiet.rows).toEqual([]);
    expect(quiet.withoutColumn).toEqual([{ table: 'public.tenants', changes: 0 }]);
  });

  it('starts at a snapshot: everything written after its consistent point', async () => {
    const repo = await fixture(story());
    const r = await impactReport({
      repo,
      column: 'tenant_id',
      since: { kind: 'snapshot', ref: '20261121-0959' },
      until: UNTIL,
    });
    expect(r.sinceSnapshot).toEqual({ id: SNAPSHOT_ID, lsn: '0/2000' });
    expect(r.since).toBe('2026-11-21T09:59:00.000001Z');
    const c = counts(r.rows);
    // Before the window it was 700 (12: 3 → 5) and 701 (30 inserted for 6).
    expect(c['public.files 3']).toEqual([0, 2, 0, 0]); // rows 11 and 12
    expect(c['public.files 5']).toEqual([0, 1, 1, 0]);
    expect(c['public.files 6']).toEqual([1, 0, 1, 0]);
    expect(r.transactions).toBe(11);
  });

  it('counts every row a truncate removed, from the snapshot and the log before it', async () => {
    const log = new LogBuilder()
      .tx(700, upd('12', '5', 'export'), ins('30', '6'), del('20'), ['D', E, null, ['1', 'login']])
      .tx(701, ins('31', '7'), del('2'), ['I', E, ['3', 'click']]) // window opens before this
      .tx(702, ['T', [F, E], false, false])
      .tx(703, ins('50', '1'))
      .tx(704, ['T', [F], false, false])
      .heartbeat('2026-11-21T10:00:30.000000Z');
    const repo = await fixture(log);
    const r = await impactReport({
      repo,
      column: 'tenant_id',
      since: { kind: 'time', at: '2026-11-21T10:00:01.500000Z' },
      until: '2026-11-21T10:00:29.000000Z',
    });
    expect(counts(r.rows)).toEqual({
      // Rows at 702: 1 (t1), 3 and 10 (t2), 11 (t3), 21 (t4), 12 (now t5), 30 (t6), 31 (t7); 50 at 704.
      'public.files 1': [1, 0, 1, 2],
      'public.files 2': [0, 0, 0, 2],
      'public.files 3': [0, 0, 0, 1],
      'public.files 4': [0, 0, 0, 1],
      'public.files 5': [0, 0, 0, 1],
      'public.files 6': [0, 0, 0, 1],
      'public.files 7': [1, 0, 0, 1],
      // events: (2 send), (2 open) from the snapshot, (3 click) from the window; (1 login) was deleted before.
      'public.events 2': [0, 0, 0, 2],
      'public.events 3': [1, 0, 0, 1],
    });
    expect(r.truncates).toEqual([
      { table: 'public.files', time: log.times[2], xid: 702, rows: 8 },
      { table: 'public.events', time: log.times[2], xid: 702, rows: 3 },
      { table: 'public.files', time: log.times[4], xid: 704, rows: 1 },
    ]);
    expect(r.notes).toContain(
      `public.files was truncated at ${log.times[2]} (transaction 702): every row it had then (8) is counted under truncated, by its value of tenant_id`,
    );
  });

  it('says what it could not know instead of guessing', async () => {
    // No snapshot before the window: the deleted row's value is unknown; the log ends early.
    const repo = await fixture(
      new LogBuilder().tx(700, ins('30', '6')).tx(701, del('30'), del('3'), upd('10', '9')),
    );
    const r = await impactReport({
      repo,
      column: 'tenant_id',
      since: { kind: 'time', at: '2026-11-21T09:00:00.000000Z' },
      until: '2026-11-21T11:00:00.000000Z',
    });
    // Row 10's new value is certain; whether it came from another tenant is not.
    expect(counts(r.rows)).toEqual({
      'public.files 6': [1, 0, 1, 0],
      'public.files 9': [0, 1, 0, 0],
    });
    expect(r.unresolved).toEqual([{ table: 'public.files', updated: 1, deleted: 1, truncated: 0 }]);
    expect(r.lookup).toEqual({ snapshot: null, chunksRead: 0, keys: 3 });
    // Each of the three is a gap: the CLI says the report is incomplete (exit 1).
    expect(r.gaps.map((g) => g.slice(0, 30)).sort()).toEqual([
      'public.files: the value of ten',
      'the change log of "prod" began',
      'the change log reaches only 20',
    ]);
    expect(r.notes.join('\n')).toMatch(
      /the change log reaches only 2026-11-21T10:00:02.000001Z: changes committed after that, up to 2026-11-21T11:00:00.000000Z, are not in it/,
    );
    expect(r.notes.join('\n')).toMatch(/began at 2026-11-21T09:58:00.000000Z, after --since/);
    expect(r.notes.join('\n')).toMatch(
      /public\.files: the value of tenant_id is unknown for 1 deleted row\(s\), 1 update\(s\) \(the value before\)/,
    );
  });

  it('refuses a column no table has, a reversed window, and several logs without --target', async () => {
    const repo = await fixture(story());
    await expect(
      impactReport({ repo, column: 'tenantid', since: WINDOW, until: UNTIL }),
    ).rejects.toThrow(/no table of "prod" has a column "tenantid"/);
    await expect(
      impactReport({ repo, column: 'tenant_id', since: WINDOW, until: '2026-11-21T10:00:00Z' }),
    ).rejects.toThrow(UsageError);
    await new ChangeLog(repo.storage, 'staging').writeInfo({
      format: 'flashback-capture',
      version: 1,
      target: 'staging',
      slot: 's',
      publication: 'flashback',
      systemIdentifier: '1',
      database: 'app',
      startLsn: '0/1',
      created: '2026-11-21T09:00:00.000Z',
    });
    await expect(
      impactReport({ repo, column: 'tenant_id', since: WINDOW, until: UNTIL }),
    ).rejects.toThrow(/several targets have a change log \(prod, staging\)/);
    const r = await impactReport({
      repo,
      target: 'prod',
      column: 'tenant_id',
      since: WINDOW,
      until: UNTIL,
    });
    expect(r.rows).toHaveLength(11);
  });

  it('reports a damaged chunk it needs as damaged data', async () => {
    const repo = await fixture(story());
    const m = await new SnapshotStore(repo.storage).read(SNAPSHOT_ID);
    const id = m.tables[0]!.chunks[0]!.id;
    await repo.storage.write(`chunks/${id.slice(0, 2)}/${id}`, Buffer.from('garbage'));
    const err = await impactReport({
      repo,
      column: 'tenant_id',
      since: WINDOW,
      until: UNTIL,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DamagedError);
    expect((err as Error).message).toMatch(/public\.files, chunk 1 of 3/);
  });
});

describe('helpers', () => {
  it('sorts integers numerically, text by code point, NULL last', () => {
    const values = ['10', null, '9', 'b', '-1', 'a'];
    expect(values.sort(compareValues)).toEqual(['-1', '9', '10', 'a', 'b', null]);
  });

  it('folds unquoted column names and keeps quoted ones', () => {
    expect(parseColumnName('Tenant_ID')).toBe('tenant_id');
    expect(parseColumnName('"TenantId"')).toBe('TenantId');
    expect(parseColumnName('"a""b"')).toBe('a"b');
    expect(() => parseColumnName('a"b')).toThrow(/--by: not a column name/);
  });

  it('writes RFC 4180 CSV, telling NULL from the empty string', () => {
    const row = (value: string | null): ImpactRow => ({
      value,
      table: 'public.t',
      inserted: 1,
      updated: 0,
      deleted: 2,
      truncated: 0,
      first: '2026-11-21T10:00:00.000001Z',
      last: '2026-11-21T10:00:01.000001Z',
    });
    const report = {
      column: 'owner',
      rows: [row('plain'), row('a,b "c"'), row('line\nbreak'), row(''), row(null)],
    } as unknown as ImpactReport;
    expect(impactCsv(report)).toBe(
      [
        'owner,table,inserted,updated,deleted,truncated,first,last',
        'plain,public.t,1,0,2,0,2026-11-21T10:00:00.000001Z,2026-11-21T10:00:01.000001Z',
        '"a,b ""c""",public.t,1,0,2,0,2026-11-21T10:00:00.000001Z,2026-11-21T10:00:01.000001Z',
        '"line\nbreak",public.t,1,0,2,0,2026-11-21T10:00:00.000001Z,2026-11-21T10:00:01.000001Z',
        '"",public.t,1,0,2,0,2026-11-21T10:00:00.000001Z,2026-11-21T10:00:01.000001Z',
        ',public.t,1,0,2,0,2026-11-21T10:00:00.000001Z,2026-11-21T10:00:01.000001Z',
        '',
      ].join('\r\n'),
    );
  });
});
