import { describe, expect, it } from 'vitest';
import { DamagedError, ExitCode, UsageError } from '../errors.js';
import { resolveTableName } from '../pg/schema/names.js';
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
  candidateChunks,
  findRowInChunk,
  type KeySpec,
  parseKeyArgs,
  parseTableName,
  parseTimeArg,
  RowNotFoundError,
  resolveKey,
  rowHistory,
} from './history.js';

describe('parsing the table, key and times', () => {
  it('reads name and schema.name, folding unquoted parts and keeping quoted ones', () => {
    expect(parseTableName('subscribers')).toEqual({ schema: undefined, name: 'subscribers' });
    expect(parseTableName('Public.Subscribers')).toEqual({ schema: 'public', name: 'subscribers' });
    expect(parseTableName('"My Schema"."T.""x"""')).toEqual({ schema: 'My Schema', name: 'T."x"' });
    for (const bad of ['', 'a.', '.a', 'a.b.c', '"a', '"a"b'])
      expect(() => parseTableName(bad), bad).toThrow(UsageError);
  });

  it('takes a name as typed when only that table exists, as restore and undo do', () => {
    const tables = [
      { schema: 'public', name: 'Mixed Case' },
      { schema: 'Sales', name: 'Orders' },
      { schema: 'public', name: 'orders' },
    ];
    const exists = (n: { schema: string | undefined; name: string }) =>
      tables.some((t) => t.name === n.name && (n.schema === undefined || t.schema === n.schema));
    expect(resolveTableName('Mixed Case', exists)).toEqual({
      schema: undefined,
      name: 'Mixed Case',
    });
    expect(resolveTableName('Sales.Orders', exists)).toEqual({ schema: 'Sales', name: 'Orders' });
    // SQL's reading first: Orders is orders when there is one.
    expect(resolveTableName('Orders', exists)).toEqual({ schema: undefined, name: 'orders' });
    expect(resolveTableName('"Mixed Case"', exists)).toEqual({
      schema: undefined,
      name: 'Mixed Case',
    });
    expect(resolveTableName('Nope', exists)).toEqual({ schema: undefined, name: 'nope' });
  });

  it('takes the key as the KEY argument or as --key col=value, never both or neither', () => {
    expect(parseKeyArgs('42', [])).toEqual({ positional: '42' });
    expect(parseKeyArgs(undefined, ['tenant_id=7', 'note=a=b'])).toEqual({
      named: [
        ['tenant_id', '7'],
        ['note', 'a=b'],
      ],
    });
    expect(() => parseKeyArgs('42', ['id=42'])).toThrow(/either as the KEY argument or with --key/);
    expect(() => parseKeyArgs(undefined, [])).toThrow(/no key given/);
    expect(() => parseKeyArgs(undefined, ['id'])).toThrow(/expected column=value/);
    expect(() => parseKeyArgs(undefined, ['id=1', 'id=2'])).toThrow(/given twice/);
  });

  it('resolves the key in key-column order, splitting at commas only for a composite key', () => {
    const t = 'public.t';
    expect(resolveKey({ positional: 'a,b' }, ['email'], [false], t)).toEqual(['a,b']);
    expect(resolveKey({ positional: '7,x@y' }, ['tenant_id', 'email'], [true, false], t)).toEqual([
      '7',
      'x@y',
    ]);
    const named: KeySpec = {
      named: [
        ['email', 'a,b'],
        ['tenant_id', '+007'],
      ],
    };
    expect(resolveKey(named, ['tenant_id', 'email'], [true, false], t)).toEqual(['7', 'a,b']);
    expect(() => resolveKey({ positional: '7' }, ['tenant_id', 'email'], [true, false], t)).toThrow(
      /has the key \(tenant_id, email\): expected 2 comma-separated values, got 1/,
    );
    expect(() =>
      resolveKey({ named: [['tenant_id', '7']] }, ['tenant_id', 'email'], [true, false], t),
    ).toThrow(/no value for email/);
    expect(() => resolveKey({ named: [['id', '7']] }, ['tenant_id'], [true], t)).toThrow(
      /"id" is not a key column of public.t/,
    );
    expect(() => resolveKey({ positional: '4x' }, ['id'], [true], t)).toThrow(
      /id of public.t is an integer, not "4x"/,
    );
    try {
      resolveKey({ positional: '1,2,3' }, ['a', 'b'], [true, true], t);
    } catch (err) {
      expect((err as UsageError).exitCode).toBe(ExitCode.usage);
    }
  });

  it('reads times as UTC with microseconds, with zones, dates only, or a duration ago', () => {
    const now = new Date('2026-11-21T12:00:00.000Z');
    expect(parseTimeArg('2026-11-21T16:05:30Z', '--since')).toBe('2026-11-21T16:05:30.000000Z');
    expect(parseTimeArg('2026-11-21 16:05:30.123456', '--since')).toBe(
      '2026-11-21T16:05:30.123456Z',
    );
    expect(parseTimeArg('2026-11-21T17:05:30.5+01:00', '--since')).toBe(
      '2026-11-21T16:05:30.500000Z',
    );
    expect(parseTimeArg('2026-11-21T00:30:00-0130', '--since')).toBe('2026-11-21T02:00:00.000000Z');
    expect(parseTimeArg('2026-11-21T14:00:00+14:00', '--since')).toBe(
      '2026-11-21T00:00:00.000000Z',
    );
    expect(parseTimeArg('2026-11-21', '--since')).toBe('2026-11-21T00:00:00.000000Z');
    expect(parseTimeArg('2h', '--since', now)).toBe('2026-11-21T10:00:00.000000Z');
    expect(parseTimeArg('now-1h30m', '--since', now)).toBe('2026-11-21T10:30:00.000000Z');
    expect(parseTimeArg('now', '--until', now)).toBe('2026-11-21T12:00:00.000000Z');
    for (const bad of [
      '2026-02-30',
      '2026-11-21T24:00:00',
      'yesterday',
      '2026-11-21T10:00:00.1234567',
      '2026-11-21T10:00:00+99:00',
      '2026-11-21T10:00:00-16',
      '2026-11-21T10:00:00+01:60',
    ])
      expect(() => parseTimeArg(bad, '--since'), bad).toThrow(/--since: not a time/);
  });
});

describe('finding a key in a snapshot', () => {
  const chunk = (first: string[], last: string[]): ChunkRef => ({
    id: 'x',
    rows: 1,
    size: 1,
    stored: 1,
    first,
    last,
  });

  /** A snapshot of table t keyed by `key` (columns of `types`), cut into `chunks`. */
  const snap = (types: Array<[string, string]>, chunks: ChunkRef[]) => ({
    manifest: {
      schema: {
        tables: [
          { schema: 'public', name: 't', columns: types.map(([name, type]) => ({ name, type })) },
        ],
      },
    } as unknown as SnapshotManifest,
    table: {
      schema: 'public',
      name: 't',
      key: types.map(([name]) => name),
      chunks,
    } as unknown as TableSnapshot,
  });

  it('picks the one chunk whose range holds an integer key, and none outside every range', () => {
    const s = snap(
      [['id', 'bigint']],
      [chunk(['1'], ['99']), chunk(['100'], ['250']), chunk(['260'], ['900'])],
    );
    expect(candidateChunks(s, ['42'])).toEqual([0]);
    expect(candidateChunks(s, ['100'])).toEqual([1]);
    expect(candidateChunks(s, ['255'])).toEqual([]);
    expect(candidateChunks(s, ['1000'])).toEqual([]);
    // Composite (integer, text): the integer column narrows, the text one cannot.
    const comp = snap(
      [
        ['n', 'integer'],
        ['name', 'text'],
      ],
      [chunk(['1', 'a'], ['1', 'z']), chunk(['2', 'a'], ['3', 'q']), chunk(['4', 'a'], ['5', 'b'])],
    );
    expect(candidateChunks(comp, ['2', 'k'])).toEqual([1]);
    expect(candidateChunks(comp, ['3', 'q'])).toEqual([1]);
  });

  it('falls back to every chunk for keys it cannot order, reading an exact boundary first', () => {
    const s = snap(
      [['name', 'text']],
      [chunk(['apple'], ['fig']), chunk(['grape'], ['lemon']), chunk(['mango'], ['plum'])],
    );
    expect(candidateChunks(s, ['kiwi'])).toEqual([0, 1, 2]);
    expect(candidateChunks(s, ['mango'])).toEqual([2, 0, 1]);
  });

  it('finds a row by its decoded key fields in COPY text, escapes included', () => {
    const content = Buffer.from(
      'a\\tb\t1\tx\n' + // key "a<TAB>b"
        'c\\\\d\t\\N\ty\\nz\n' + // key "c\d", NULL, "y<LF>z"
        'e\t3\t\\x41\n',
    );
    expect(findRowInChunk(content, ['a\tb'])).toEqual(['a\tb', '1', 'x']);
    expect(findRowInChunk(content, ['c\\d'])).toEqual(['c\\d', null, 'y\nz']);
    expect(findRowInChunk(content, ['e'])).toEqual(['e', '3', 'A']);
    expect(findRowInChunk(content, ['a'])).toBeUndefined();
    // Composite keys match on every key field.
    expect(findRowInChunk(content, ['e', '3'])).toEqual(['e', '3', 'A']);
    expect(findRowInChunk(content, ['e', '4'])).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------
// A repository built by hand: a snapshot of public.t (id bigint, name text,
// big text) in two chunks, and a change log.

const COLS: ChangeColumn[] = [
  ['id', 20, -1, true],
  ['name', 25, -1, false],
  ['big', 25, -1, false],
];
const REL: ChangeRecord = ['R', 16400, 'public', 't', 'd', COLS];
const OTHER: ChangeRecord = ['R', 16401, 'public', 'other', 'd', COLS];

/** Builds transactions: each gets a commit LSN, end LSN and a time 1 s apart. */
class LogBuilder {
  records: ChangeRecord[] = [REL, OTHER];
  /** Commit times by xid, for windows. */
  readonly times = new Map<number, string>();
  private n = 0;
  tx(xid: number, ...changes: ChangeRecord[]): this {
    this.n++;
    const lsn = `0/${(0x2000 + this.n * 0x100).toString(16).toUpperCase()}`;
    const end = `0/${(0x2000 + this.n * 0x100 + 0x10).toString(16).toUpperCase()}`;
    const time = `2026-11-21T10:00:${String(this.n).padStart(2, '0')}.000001Z`;
    this.times.set(xid, time);
    this.records.push(['B', xid, lsn, time], ...changes, ['C', lsn, end, time]);
    return this;
  }
}

/** The end LSN of the last commit among records. */
function committed(records: readonly ChangeRecord[], fallback: bigint): bigint {
  let last = fallback;
  for (const r of records) if (r[0] === 'C') last = lsnValue(r[2]);
  return last;
}

async function fixture(
  log: LogBuilder,
  opts: { snapshotLsn?: string; logStart?: string; otherLog?: boolean } = {},
): Promise<{ repo: Repository; snapshotId: string }> {
  const storage = new MemoryStorage();
  const repo = await Repository.init(storage);
  const chunks = new ChunkStore(storage);
  const put = async (rows: string[]): Promise<ChunkRef> => {
    const content = Buffer.from(`${rows.join('\n')}\n`);
    const { id, storedSize } = await chunks.put(content);
    const key = (r: string) => [r.split('\t')[0]!];
    return {
      id,
      rows: rows.length,
      size: content.length,
      stored: storedSize,
      first: key(rows[0]!),
      last: key(rows[rows.length - 1]!),
    };
  };
  // Chunks hold key columns first; the model's column order (id, name, big) is the same here.
  const cs = [
    await put(['1\tone\tbig-1', '42\tanswer\tbig-42', '50\tfifty\tbig-50']),
    await put(['100\thundred\tbig-100', '200\ttwo hundred\tbig-200']),
  ];
  const table: TableSnapshot = {
    schema: 'public',
    name: 't',
    columns: ['id', 'name', 'big'],
    key: ['id'],
    keyKind: 'primary',
    boundaryBits: 1,
    rows: 5,
    bytes: 0,
    storedBytes: 0,
    chunks: cs,
  };
  const at = '2026-11-21T09:59:00.000Z';
  const snapshotId = '20261121-095900-abcd';
  const manifest: SnapshotManifest = {
    format: 'flashback-snapshot',
    version: 1,
    id: snapshotId,
    target: 'prod',
    database: 'app',
    encoding: 'UTF8',
    collate: 'C',
    ctype: 'C',
    systemIdentifier: '1',
    host: 'h',
    serverVersion: '17.10',
    serverVersionNum: 170010,
    lsn: opts.snapshotLsn ?? '0/2000',
    startedAt: at,
    finishedAt: at,
    schema: {
      tables: [
        {
          schema: 'public',
          name: 't',
          columns: [
            { name: 'id', type: 'bigint' },
            { name: 'name', type: 'text' },
            { name: 'big', type: 'text' },
          ],
        },
      ],
    },
    tables: [table],
    totals: { tables: 1, rows: 5, bytes: 0, storedBytes: 0, newChunks: 2, newBytes: 0 },
  };
  await new SnapshotStore(storage).commit(manifest);
  const info = {
    format: 'flashback-capture',
    version: 1,
    target: 'prod',
    slot: 'flashback_prod',
    publication: 'flashback',
    systemIdentifier: '1',
    database: 'app',
    startLsn: opts.logStart ?? '0/2000',
    created: at,
  } as const;
  const changes = new ChangeLog(storage, 'prod');
  await changes.writeInfo(info);
  // Two segments, cut between transactions, the second repeating the relation records.
  let cut = Math.floor(log.records.length / 2);
  while (cut < log.records.length && log.records[cut]![0] !== 'B') cut++;
  const first = log.records.slice(0, cut);
  const c1 = committed(first, lsnValue(info.startLsn));
  await changes.writeSegment(1, c1, first);
  const second = [...log.records.filter((r) => r[0] === 'R'), ...log.records.slice(cut)];
  await changes.writeSegment(2, committed(second, c1), second);
  if (opts.otherLog === true) {
    await new ChangeLog(storage, 'staging').writeInfo({ ...info, target: 'staging' });
  }
  return { repo, snapshotId };
}

const U = (id: string, name: string | null, big: string | null | 0): ChangeRecord => [
  'U',
  16400,
  null,
  null,
  [id, name, big],
];

/** The log the tests read: updates with TOAST, noise, a key change, delete, re-insert, truncate. */
function story(): LogBuilder {
  return new LogBuilder()
    .tx(700, U('42', 'renamed', 0), U('50', 'noise', 0)) // big TOASTed and unchanged: not sent
    .tx(701, ['U', 16401, null, null, ['42', 'other table', 0]]) // same key, other table
    .tx(702, U('42', 'renamed', 'new big'), U('42', null, 0)) // two changes, one version
    .tx(703, ['U', 16400, ['42', null, null], null, ['43', null, 0]]) // the key changes
    .tx(704, ['I', 16400, ['42', 'a newcomer', 'n']]) // another row takes key 42
    .tx(705, ['D', 16400, ['43', null, null], null])
    .tx(706, ['I', 16400, ['43', 'back', 'b']])
    .tx(707, ['T', [16400], false, false])
    .tx(708, ['I', 16400, ['44', 'x', 'y']], ['D', 16400, ['44', null, null], null]);
}

describe('rowHistory', () => {
  it('starts from the snapshot chunk holding the key and follows the row through the log', async () => {
    const { repo, snapshotId } = await fixture(story());
    const h = await rowHistory({ repo, table: 't', key: { positional: '042' } });
    expect(h).toMatchObject({
      target: 'prod',
      schema: 'public',
      table: 't',
      keyColumns: ['id'],
      key: ['42'],
      snapshot: { id: snapshotId, lsn: '0/2000', chunksRead: 1, chunks: 2 },
    });
    expect(h.notes).toEqual([
      expect.stringMatching(/key changed from \(42\) to \(43\) in transaction 703/),
    ]);
    expect(h.versions).toEqual([
      {
        time: '2026-11-21T09:59:00.000000Z',
        xid: null,
        lsn: '0/2000',
        op: 'snapshot',
        snapshot: snapshotId,
        key: ['42'],
        row: { id: '42', name: 'answer', big: 'big-42' },
        changed: ['id', 'name', 'big'],
      },
      {
        time: '2026-11-21T10:00:01.000001Z',
        xid: 700,
        lsn: '0/2100',
        op: 'update',
        key: ['42'],
        row: { id: '42', name: 'renamed', big: 'big-42' },
        changed: ['name'],
        old: { name: 'answer' },
      },
      {
        time: '2026-11-21T10:00:03.000001Z',
        xid: 702,
        lsn: '0/2300',
        op: 'update',
        key: ['42'],
        row: { id: '42', name: null, big: 'new big' },
        changed: ['name', 'big'],
        old: { name: 'renamed', big: 'big-42' },
      },
      {
        time: '2026-11-21T10:00:04.000001Z',
        xid: 703,
        lsn: '0/2400',
        op: 'update',
        key: ['43'],
        keyChangedFrom: ['42'],
        row: { id: '43', name: null, big: 'new big' },
        changed: ['id'],
        old: { id: '42' },
      },
      {
        time: '2026-11-21T10:00:06.000001Z',
        xid: 705,
        lsn: '0/2600',
        op: 'delete',
        key: ['43'],
        row: null,
        changed: ['id', 'name', 'big'],
        old: { id: '43', name: null, big: 'new big' },
      },
      {
        time: '2026-11-21T10:00:07.000001Z',
        xid: 706,
        lsn: '0/2700',
        op: 'insert',
        key: ['43'],
        row: { id: '43', name: 'back', big: 'b' },
        changed: ['id', 'name', 'big'],
      },
      {
        time: '2026-11-21T10:00:08.000001Z',
        xid: 707,
        lsn: '0/2800',
        op: 'truncate',
        key: ['43'],
        row: null,
        changed: ['id', 'name', 'big'],
        old: { id: '43', name: 'back', big: 'b' },
      },
    ]);
  });

  it('cuts the list to --since/--until, starting with the version in effect at --since', async () => {
    const log = story();
    const { repo } = await fixture(log);
    const h = await rowHistory({
      repo,
      table: 'public.t',
      key: { named: [['id', '42']] },
      since: '2026-11-21T10:00:02.000000Z', // after 700, before 702
      until: log.times.get(703),
    });
    expect(h.versions.map((v) => [v.op, v.xid, v.changed, v.old])).toEqual([
      ['update', 700, ['id', 'name', 'big'], undefined],
      ['update', 702, ['name', 'big'], { name: 'renamed', big: 'big-42' }],
      ['update', 703, ['id'], { id: '42' }],
    ]);
    // A window in which nothing touched the row shows the version in effect.
    const quiet = await rowHistory({
      repo,
      table: 't',
      key: { positional: '42' },
      since: '2026-11-21T10:00:01.500000Z',
      until: '2026-11-21T10:00:02.500000Z',
    });
    expect(quiet.versions.map((v) => [v.op, v.xid])).toEqual([['update', 700]]);
    // A row no change names: its snapshot version, then the truncate that removed every row.
    const still = await rowHistory({ repo, table: 't', key: { positional: '200' } });
    expect(still.versions.map((v) => [v.op, v.xid, v.row])).toEqual([
      ['snapshot', null, { id: '200', name: 'two hundred', big: 'big-200' }],
      ['truncate', 707, null],
    ]);
    expect(still.snapshot?.chunksRead).toBe(1);
  });

  it('fails with exit 3 and says where it looked when no version is in the window', async () => {
    const log = story();
    const { repo, snapshotId } = await fixture(log);
    const err = await rowHistory({ repo, table: 't', key: { positional: '255' } }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RowNotFoundError);
    expect((err as RowNotFoundError).exitCode).toBe(ExitCode.usage);
    expect((err as Error).message).toBe(
      `no version of public.t with key (255) in snapshot ${snapshotId} or in the change log after it`,
    );
    // Deleted before the window: said so, with when.
    const gone = await rowHistory({
      repo,
      table: 't',
      key: { positional: '42' },
      since: '2026-11-21T10:00:06.500000Z',
      until: '2026-11-21T10:00:06.900000Z',
    }).catch((e: unknown) => e as Error);
    expect((gone as Error).message).toMatch(
      /between 2026-11-21T10:00:06.500000Z and 2026-11-21T10:00:06.900000Z .*; it was deleted at 2026-11-21T10:00:06.000001Z \(transaction 705\)/,
    );
    // A row inserted and deleted in one transaction never existed for anyone else.
    await expect(rowHistory({ repo, table: 't', key: { positional: '44' } })).rejects.toThrow(
      RowNotFoundError,
    );
    await expect(rowHistory({ repo, table: 'nope', key: { positional: '1' } })).rejects.toThrow(
      /no version of public.nope with key \(1\)/,
    );
  });

  it('says so when the snapshot is older than the log, and prefers a snapshot the log covers', async () => {
    const gap = await fixture(story(), { snapshotLsn: '0/1000', logStart: '0/2000' });
    const h = await rowHistory({ repo: gap.repo, table: 't', key: { positional: '42' } });
    expect(h.notes[0]).toMatch(
      /snapshot 20261121-095900-abcd \(LSN 0\/1000\) was taken before the change log began \(LSN 0\/2000\)/,
    );
    expect(h.versions.map((v) => v.xid)).toEqual([null, 700, 702, 703, 705, 706, 707]);
    // A window opening before that snapshot finished still starts from it: it hides nothing the log has.
    const early = await rowHistory({
      repo: gap.repo,
      table: 't',
      key: { positional: '42' },
      since: '2026-11-21T09:00:00.000000Z',
    });
    expect(early.versions.map((v) => v.xid)).toEqual([null, 700, 702, 703, 705, 706, 707]);
    // The log began before the snapshot: the snapshot is found by crossing it, no gap.
    const covered = await fixture(story(), { snapshotLsn: '0/2000', logStart: '0/1000' });
    const c = await rowHistory({ repo: covered.repo, table: 't', key: { positional: '42' } });
    expect(c.notes.filter((n) => n.includes('before the change log began'))).toEqual([]);
    expect(c.versions.map((v) => v.xid)).toEqual([null, 700, 702, 703, 705, 706, 707]);
  });

  it('follows a table only the log knows, marking TOASTed values it never saw', async () => {
    const { repo } = await fixture(story());
    const h = await rowHistory({ repo, table: 'other', key: { positional: '42' } });
    expect(h.notes[0]).toMatch(/table "other" is in no snapshot/);
    expect(h.snapshot).toBeNull();
    expect(h.versions).toEqual([
      expect.objectContaining({
        op: 'update',
        xid: 701,
        row: { id: '42', name: 'other table', big: null },
        unknown: ['big'],
        changed: ['id', 'name', 'big'],
      }),
    ]);
  });

  it('matches by the old row under REPLICA IDENTITY FULL, and by a replica identity that is not the key', async () => {
    const full = new LogBuilder()
      .tx(800, ['U', 16400, null, ['42', 'answer', 'big-42'], ['42', 'full', 0]])
      .tx(801, ['D', 16400, null, ['42', 'full', 'big-42']]);
    const a = await fixture(full);
    const h = await rowHistory({ repo: a.repo, table: 't', key: { positional: '42' } });
    expect(h.versions.map((v) => [v.op, v.xid, v.row])).toEqual([
      ['snapshot', null, { id: '42', name: 'answer', big: 'big-42' }],
      ['update', 800, { id: '42', name: 'full', big: 'big-42' }],
      ['delete', 801, null],
    ]);
    // The log identifies rows by "name" (a replica identity index), the snapshot by id.
    const byName: ChangeColumn[] = [
      ['id', 20, -1, false],
      ['name', 25, -1, true],
      ['big', 25, -1, false],
    ];
    const other = new LogBuilder();
    other.records = [['R', 16400, 'public', 't', 'i', byName]];
    other
      .tx(810, ['D', 16400, [null, 'fifty', null], null]) // another row
      .tx(811, ['U', 16400, [null, 'answer', null], null, ['42', 'renamed', 0]])
      .tx(812, ['D', 16400, [null, 'renamed', null], null]);
    const b = await fixture(other);
    const g = await rowHistory({ repo: b.repo, table: 't', key: { positional: '42' } });
    expect(g.versions.map((v) => [v.op, v.xid, v.changed])).toEqual([
      ['snapshot', null, ['id', 'name', 'big']],
      ['update', 811, ['name']],
      ['delete', 812, ['id', 'name', 'big']],
    ]);
  });

  it('reports a damaged chunk or log segment as damaged data (exit 8), naming where', async () => {
    const { repo, snapshotId } = await fixture(story());
    const manifest = await new SnapshotStore(repo.storage).read(snapshotId);
    const first = manifest.tables[0]!.chunks[0]!.id;
    await repo.storage.write(`chunks/${first.slice(0, 2)}/${first}`, Buffer.from('garbage'));
    const err = (await rowHistory({ repo, table: 't', key: { positional: '42' } }).catch(
      (e: unknown) => e,
    )) as DamagedError;
    expect(err).toBeInstanceOf(DamagedError);
    expect(err.exitCode).toBe(ExitCode.damaged);
    expect(err.message).toMatch(
      new RegExp(
        `chunk ${first} is damaged: .*\\(snapshot ${snapshotId}, public\\.t, chunk 1 of 2\\)`,
      ),
    );
    // Row 200 is in the other chunk: unaffected until the log is damaged too.
    expect(
      (await rowHistory({ repo, table: 't', key: { positional: '200' } })).versions,
    ).toHaveLength(2);
    for await (const o of repo.storage.list('changes/prod/')) {
      if (o.key.endsWith('.seg')) await repo.storage.write(o.key, Buffer.from('FBC1\x00{not json'));
    }
    await expect(rowHistory({ repo, table: 't', key: { positional: '200' } })).rejects.toThrow(
      /change-log segment changes\/prod\/\S+ is damaged/,
    );
  });

  it('picks the only change log, and asks for --target when there are several', async () => {
    const { repo } = await fixture(story(), { otherLog: true });
    await expect(rowHistory({ repo, table: 't', key: { positional: '42' } })).rejects.toThrow(
      /several targets have a change log \(prod, staging\)/,
    );
    await expect(
      rowHistory({ repo, target: 'dev', table: 't', key: { positional: '42' } }),
    ).rejects.toThrow(
      /target "dev" has no change log in this repository \(change logs: prod, staging\)/,
    );
    const h = await rowHistory({ repo, target: 'prod', table: 't', key: { positional: '42' } });
    expect(h.versions).toHaveLength(7);
    const empty = await Repository.init(new MemoryStorage());
    await expect(rowHistory({ repo: empty, table: 't', key: { positional: '1' } })).rejects.toThrow(
      /no change log in this repository/,
    );
  });
});
