/**
 * The logical replication client against real servers: exact decoding of
 * every kind of change, acknowledgement and resume, bounded memory under a
 * slow consumer, protocol-2 streaming, exported snapshots, typed errors, and
 * a server restart (on a private server: the shared ones cannot restart).
 */
import { randomBytes } from 'node:crypto';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectParams, type PgClient } from '../../src/pg/connect.js';
import { EmbeddedServer, isAlive } from '../../src/pg/embedded.js';
import {
  decodePgoutput,
  Lsn,
  type PgoutputMessage,
  type Tuple,
  UNCHANGED_TOAST,
} from '../../src/pg/replication/pgoutput.js';
import {
  createSlot,
  dropPublication,
  dropSlot,
  ensurePublication,
  slotInfo,
} from '../../src/pg/replication/slot.js';
import {
  type DataEvent,
  openReplicationStream,
  ReplicationError,
  type ReplicationStream,
  type ReplicationTarget,
  startReplication,
} from '../../src/pg/replication/stream.js';
import { connectTo, freshDatabase, params, type TestServer, testServers } from '../harness/pg.js';
import { TEST_BASE_DIR } from '../harness/servers.js';

const SCHEMA = `
  CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
  CREATE TABLE t_pk (
    id int PRIMARY KEY, ts timestamptz, n numeric, n2 numeric, b bytea, txt text,
    arr int[], tarr text[], j jsonb, flag boolean, f8 float8, code varchar(10), m mood, big text
  );
  CREATE TABLE t_full (id int, note text);
  ALTER TABLE t_full REPLICA IDENTITY FULL;
  CREATE TABLE t_other (k text PRIMARY KEY, v int);
  CREATE TABLE t_big (id int PRIMARY KEY, payload text);
  CREATE TABLE t_snap (id int PRIMARY KEY);
`;

/** Values whose text forms are easy to get wrong. */
const TRICKY_ROW = `(1, '2024-02-29 23:59:59.123456+05:30', 'NaN', 1e-30, '\\x00ff5c0a'::bytea,
  E'tab\\there\\nnew line \\\\ backslash é 😀 "quoted"', '{1,NULL,3}', ARRAY['a b', NULL, 'c"d', E'e\\\\f'],
  '{"é": "x\\ty", "a": [1, 2.50, null], "n": 1e-30}', true, 0.1, 'short', 'happy',
  (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g))`;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function slotName(prefix: string): string {
  return `fb_${prefix}_${randomBytes(4).toString('hex')}`;
}

/** Rows as arrays of text (the output functions' form: what pgoutput sends). */
async function rows(c: PgClient, text: string): Promise<Array<Array<string | null>>> {
  const r = await c.query<Array<string | null>>({ text, rowMode: 'array' });
  return r.rows;
}

async function one(c: PgClient, text: string): Promise<string> {
  const v = (await rows(c, text))[0]?.[0];
  if (v == null) throw new Error(`no value from: ${text}`);
  return v;
}

/** Reads data events (keepalives skipped) until `stop` says so. */
async function readUntil(
  stream: ReplicationStream,
  stop: (e: DataEvent, all: readonly DataEvent[]) => boolean,
  timeoutMs = 20_000,
): Promise<DataEvent[]> {
  const out: DataEvent[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`timed out after ${out.length} events`)),
        deadline - Date.now(),
      );
    });
    const ev = await Promise.race([stream.read(), timeout]).finally(() => clearTimeout(timer));
    if (ev === undefined) throw new Error('the stream ended');
    if (ev.kind !== 'data') continue;
    out.push(ev);
    if (stop(ev, out)) return out;
  }
}

const commits =
  (n: number) =>
  (_e: DataEvent, all: readonly DataEvent[]): boolean =>
    all.filter((x) => x.message.tag === 'commit' || x.message.tag === 'stream-commit').length === n;

/** Polls until `check` passes or 10 s have gone by. */
async function eventually(check: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(50);
    }
  }
}

/** The low 32 bits of a pg_current_xact_id() (the xid pgoutput sends). */
function xid32(xid8: string): number {
  return Number(BigInt(xid8) & 0xffff_ffffn);
}

/** Replaces one column of a tuple. */
function withValue(t: Tuple, i: number, v: Tuple[number]): Tuple {
  return t.map((x, j) => (j === i ? v : x));
}

describe.each(testServers().map((s) => [s.major, s] as const))(
  'replication client on PostgreSQL %i',
  (_major, server: TestServer) => {
    let db: string;
    let target: ReplicationTarget;
    let admin: PgClient;
    const slots: string[] = [];
    const oid: Record<string, number> = {};

    beforeAll(async () => {
      db = await freshDatabase(server, 'repl');
      target = { name: `test-pg${server.major}`, connection: params(server, db) };
      admin = await connectTo(server, db);
      await admin.query(SCHEMA);
      for (const t of ['t_pk', 't_full', 't_other', 't_big', 't_snap', 'mood']) {
        oid[t] = Number(
          await one(
            admin,
            t === 'mood' ? `SELECT 'mood'::regtype::oid` : `SELECT '${t}'::regclass::oid`,
          ),
        );
      }
      expect(await ensurePublication(admin)).toEqual({ created: true, allTables: true });
      expect(await ensurePublication(admin)).toEqual({ created: false, allTables: true });
    });

    afterAll(async () => {
      // Slots hold WAL for as long as they exist. A failed test may have left a stream open.
      await admin.query(
        'SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = current_database() AND active_pid IS NOT NULL',
      );
      for (const s of slots) await dropSlot(admin, s);
      await dropPublication(admin);
      await admin.end();
      const c = await connectTo(server);
      await c.query(`DROP DATABASE ${db} WITH (FORCE)`);
      await c.end();
    });

    it('decodes every kind of change exactly; acknowledged commits are not sent again, nothing after them is lost', async () => {
      const slot = slotName('main');
      slots.push(slot);
      const created = await createSlot(target, slot);
      expect(created.snapshotName).toBeUndefined();
      await created.release();

      // T1: inserts into three tables, tricky values, an out-of-line (TOASTed) value.
      await admin.query('BEGIN');
      const x1 = xid32(await one(admin, 'SELECT pg_current_xact_id()::text'));
      const r1 = (await rows(admin, `INSERT INTO t_pk VALUES ${TRICKY_ROW} RETURNING *`))[0]!;
      const r2 = (await rows(admin, 'INSERT INTO t_pk (id) VALUES (2) RETURNING *'))[0]!;
      const f = await rows(
        admin,
        `INSERT INTO t_full VALUES (1, 'one'), (2, E'two\\\\two') RETURNING *`,
      );
      const o = await rows(admin, `INSERT INTO t_other VALUES ('a', 1), ('b', 2) RETURNING *`);
      await admin.query('COMMIT');

      // T2: an update keeping the key (TOASTed column untouched), one changing it, one under FULL.
      await admin.query('BEGIN');
      const x2 = xid32(await one(admin, 'SELECT pg_current_xact_id()::text'));
      const u1 = (
        await rows(
          admin,
          `UPDATE t_pk SET txt = 'changed', ts = '1999-12-31 23:59:59.999999+00' WHERE id = 1 RETURNING *`,
        )
      )[0]!;
      const u2 = (await rows(admin, 'UPDATE t_pk SET id = 3 WHERE id = 2 RETURNING *'))[0]!;
      const u3 = (await rows(admin, `UPDATE t_full SET note = 'uno' WHERE id = 1 RETURNING *`))[0]!;
      await admin.query('COMMIT');

      // A heartbeat outside any transaction.
      const hb1 = Lsn.parse(
        await one(admin, `SELECT pg_logical_emit_message(false, 'flashback', 'hb')::text`),
      );

      // T3: a transactional heartbeat, deletes by key and under FULL.
      await admin.query('BEGIN');
      const x3 = xid32(await one(admin, 'SELECT pg_current_xact_id()::text'));
      const hb2 = Lsn.parse(
        await one(admin, `SELECT pg_logical_emit_message(true, 'flashback', 'hb')::text`),
      );
      await admin.query('DELETE FROM t_pk WHERE id = 3');
      await admin.query('DELETE FROM t_full WHERE id = 2');
      await admin.query('COMMIT');

      // T4: one TRUNCATE over two tables.
      await admin.query('BEGIN');
      const x4 = xid32(await one(admin, 'SELECT pg_current_xact_id()::text'));
      await admin.query('TRUNCATE t_full, t_other');
      await admin.query('COMMIT');

      const cols = await rows(
        admin,
        `SELECT attname, atttypid::int, atttypmod FROM pg_attribute
          WHERE attrelid = 't_pk'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
      );
      const nulls = (n: number) => Array.from({ length: n }, () => null);
      const bigIdx = cols.findIndex((c) => c[0] === 'big');

      const stream = await openReplicationStream(target, { slot });
      const events = await readUntil(stream, commits(4));
      const messages = events.map((e) => e.message);
      const at = expect.any(Lsn);
      const time = expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
      const begin = (xid: number) => ({
        tag: 'begin',
        finalLsn: at,
        commitTime: time,
        commitTimeMicros: expect.any(BigInt),
        xid,
      });
      const commit = {
        tag: 'commit',
        flags: 0,
        commitLsn: at,
        endLsn: at,
        commitTime: time,
        commitTimeMicros: expect.any(BigInt),
      };
      expect(messages).toEqual([
        begin(x1),
        { tag: 'type', typeOid: oid.mood, schema: 'public', name: 'mood' },
        {
          tag: 'relation',
          relationId: oid.t_pk,
          schema: 'public',
          name: 't_pk',
          replicaIdentity: 'd',
          columns: cols.map((c) => ({
            name: c[0],
            typeOid: Number(c[1]),
            typeMod: Number(c[2]),
            isKey: c[0] === 'id',
          })),
        },
        { tag: 'insert', relationId: oid.t_pk, newTuple: r1 },
        { tag: 'insert', relationId: oid.t_pk, newTuple: r2 },
        {
          tag: 'relation',
          relationId: oid.t_full,
          schema: 'public',
          name: 't_full',
          replicaIdentity: 'f',
          columns: [
            { name: 'id', typeOid: 23, typeMod: -1, isKey: true },
            { name: 'note', typeOid: 25, typeMod: -1, isKey: true },
          ],
        },
        { tag: 'insert', relationId: oid.t_full, newTuple: f[0] },
        { tag: 'insert', relationId: oid.t_full, newTuple: f[1] },
        {
          tag: 'relation',
          relationId: oid.t_other,
          schema: 'public',
          name: 't_other',
          replicaIdentity: 'd',
          columns: [
            { name: 'k', typeOid: 25, typeMod: -1, isKey: true },
            { name: 'v', typeOid: 23, typeMod: -1, isKey: false },
          ],
        },
        { tag: 'insert', relationId: oid.t_other, newTuple: o[0] },
        { tag: 'insert', relationId: oid.t_other, newTuple: o[1] },
        commit,
        begin(x2),
        // The TOASTed column was not touched: the server does not send it.
        { tag: 'update', relationId: oid.t_pk, newTuple: withValue(u1, bigIdx, UNCHANGED_TOAST) },
        { tag: 'update', relationId: oid.t_pk, oldKey: ['2', ...nulls(13)], newTuple: u2 },
        { tag: 'update', relationId: oid.t_full, oldTuple: f[0], newTuple: u3 },
        commit,
        {
          tag: 'message',
          transactional: false,
          lsn: at,
          prefix: 'flashback',
          content: Buffer.from('hb'),
        },
        begin(x3),
        {
          tag: 'message',
          transactional: true,
          lsn: at,
          prefix: 'flashback',
          content: Buffer.from('hb'),
        },
        { tag: 'delete', relationId: oid.t_pk, oldKey: ['3', ...nulls(13)] },
        { tag: 'delete', relationId: oid.t_full, oldTuple: f[1] },
        commit,
        begin(x4),
        // TRUNCATE gives the tables new files, which invalidates what the session
        // sent about them: they are described again.
        expect.objectContaining({ tag: 'relation', relationId: oid.t_full }),
        expect.objectContaining({ tag: 'relation', relationId: oid.t_other }),
        {
          tag: 'truncate',
          relationIds: [oid.t_full, oid.t_other],
          cascade: false,
          restartIdentity: false,
        },
        commit,
      ]);

      // The values are the server's text forms, untouched.
      expect(r1).toEqual([
        '1',
        expect.stringMatching(/^2024-02-29 \d\d:\d\d:59\.123456[+-]\d\d/),
        'NaN',
        '0.000000000000000000000000000001',
        '\\x00ff5c0a',
        'tab\there\nnew line \\ backslash é 😀 "quoted"',
        '{1,NULL,3}',
        '{"a b",NULL,"c\\"d","e\\\\f"}',
        '{"a": [1, 2.50, null], "n": 0.000000000000000000000000000001, "é": "x\\ty"}',
        't',
        '0.1',
        'short',
        'happy',
        expect.stringMatching(/^[0-9a-f]{12800}$/),
      ]);

      // `SELECT col::text` gives the same text for every column but the boolean: the
      // cast to text spells it out, the output function (what pgoutput sends) says 't'.
      const casts = await rows(
        admin,
        `SELECT ${cols.map((c) => `${c[0]}::text`).join(', ')} FROM t_pk WHERE id = 1`,
      );
      const flagIdx = cols.findIndex((c) => c[0] === 'flag');
      expect(casts[0]).toEqual(withValue(u1, flagIdx, 'true'));
      expect(u1[flagIdx]).toBe('t');

      // Positions: Begin names its Commit's LSN, a Commit's XLogData starts at its
      // end LSN, heartbeats carry the LSN pg_logical_emit_message returned.
      const begins = events.filter((e) => e.message.tag === 'begin');
      const ends = events.filter((e) => e.message.tag === 'commit');
      expect(begins).toHaveLength(4);
      for (const [i, b] of begins.entries()) {
        const bm = b.message as Extract<PgoutputMessage, { tag: 'begin' }>;
        const c = ends[i]!;
        const cm = c.message as Extract<PgoutputMessage, { tag: 'commit' }>;
        expect(bm.finalLsn.value).toBe(cm.commitLsn.value);
        expect(bm.commitTimeMicros).toBe(cm.commitTimeMicros);
        expect(cm.endLsn.value).toBeGreaterThan(cm.commitLsn.value);
        expect(c.walStart.value).toBe(cm.endLsn.value);
      }
      const hbs = messages.filter((m) => m.tag === 'message');
      expect(hbs.map((m) => m.lsn.value)).toEqual([hb1.value, hb2.value]);
      // Every event but a Relation or Type (which the server sends at 0/0) is in WAL order.
      const positioned = events.filter(
        (e) => e.message.tag !== 'relation' && e.message.tag !== 'type',
      );
      for (const [i, e] of positioned.entries()) {
        expect(e.walStart.value).toBeGreaterThan(0n);
        expect(e.walEnd.value).toBe(e.walStart.value);
        if (i > 0) {
          expect(e.walStart.value).toBeGreaterThanOrEqual(positioned[i - 1]!.walStart.value);
        }
      }
      for (const e of events.filter((x) => !positioned.includes(x))) {
        expect(e.walStart.value).toBe(0n);
      }

      // Nothing was acknowledged, so the slot has not moved, however much was read.
      expect((await slotInfo(admin, slot))?.confirmedFlushLsn?.value).toBe(
        created.consistentPoint.value,
      );
      expect(() => stream.acknowledge(new Lsn(ends[3]!.walStart.value + 1n))).toThrow(
        /beyond the last position read/,
      );
      const t2End = (ends[1]!.message as Extract<PgoutputMessage, { tag: 'commit' }>).endLsn;
      expect(stream.acknowledge(t2End)).toBe(true);
      expect(stream.acknowledged.value).toBe(t2End.value);
      expect(stream.acknowledge(created.consistentPoint)).toBe(true); // never backwards
      expect(stream.acknowledged.value).toBe(t2End.value);
      await eventually(async () => {
        const info = await slotInfo(admin, slot);
        expect(info?.active).toBe(true);
        expect(info?.confirmedFlushLsn?.value).toBe(t2End.value);
      });
      await stream.close();
      expect(stream.acknowledge(t2End)).toBe(false);
      await eventually(async () => expect((await slotInfo(admin, slot))?.active).toBe(false));
      // Closing acknowledged nothing more.
      expect((await slotInfo(admin, slot))?.confirmedFlushLsn?.value).toBe(t2End.value);

      // A new session starts right after T2: the heartbeat, T3 and T4, and nothing else.
      const again = await openReplicationStream(target, { slot });
      const resumed = await readUntil(again, commits(2));
      await again.close();
      const t2Index = events.indexOf(ends[1]!);
      const strip = (es: readonly DataEvent[]) =>
        es
          .filter((e) => e.message.tag !== 'relation' && e.message.tag !== 'type')
          .map((e) => ({ walStart: e.walStart.value, message: e.message }));
      expect(strip(resumed)).toEqual(strip(events.slice(t2Index + 1)));
      // Relations are described again to the new session before their first change.
      expect(resumed.filter((e) => e.message.tag === 'relation').length).toBeGreaterThanOrEqual(2);
    });

    it('delivers raw messages, in batches, byte for byte what decoded mode decodes', async () => {
      const slot = slotName('raw');
      slots.push(slot);
      await (await createSlot(target, slot)).release();
      await admin.query(`INSERT INTO t_pk VALUES ${TRICKY_ROW.replace('(1,', '(41,')}`);
      await admin.query(`INSERT INTO t_full VALUES (41, 'x')`);
      await admin.query(`UPDATE t_full SET note = 'raw' WHERE id = 41`);
      await admin.query(`INSERT INTO t_other VALUES ('raw', 1)`);
      await admin.query(`DELETE FROM t_other WHERE k = 'raw'`);
      await admin.query(`SELECT pg_logical_emit_message(false, 'flashback.heartbeat', 'x')`);
      await admin.query('TRUNCATE t_snap');

      // Raw, taken in batches while the socket pauses between them. Nothing acknowledged.
      const raw = await openReplicationStream(target, { slot, raw: true });
      const got: Array<{ data: Buffer; position: bigint }> = [];
      let batches = 0;
      let furthest = 0n; // of everything read, keepalives included
      const deadline = Date.now() + 20_000;
      while (got.filter((m) => m.data[0] === 0x43).length < 6) {
        if (Date.now() > deadline) throw new Error(`timed out after ${got.length} messages`);
        await raw.accumulate(50);
        const events = raw.readQueued();
        for (const e of events) {
          const at = e.kind === 'raw' ? e.position : e.walEnd.value;
          if (at > furthest) furthest = at;
        }
        const batch = events.filter((e) => e.kind === 'raw');
        if (batch.length > 0) batches++;
        got.push(...batch);
      }
      expect(batches).toBeLessThan(got.length);
      // (Relation and Type messages are at no WAL position: 0/0.)
      const positions = got.map((m) => m.position).filter((p) => p > 0n);
      expect(positions).toEqual([...positions].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
      const lastCommit = got.filter((m) => m.data[0] === 0x43).at(-1)!;
      // A Commit's position is its end LSN (what a consumer acknowledges); nothing beyond what was read.
      expect(lastCommit.position).toBe(lastCommit.data.readBigUInt64BE(10));
      expect(furthest).toBeGreaterThanOrEqual(lastCommit.position);
      expect(() => raw.acknowledge(new Lsn(furthest + 1n))).toThrow(RangeError);
      await raw.close();

      // The same slot again, decoded: the same messages, which the raw bytes decode to.
      const decoded = await openReplicationStream(target, { slot });
      const events = await readUntil(decoded, commits(6));
      expect(got.map((m) => decodePgoutput(m.data))).toEqual(events.map((e) => e.message));
      expect(events.map((e) => e.message.tag)).toEqual(
        expect.arrayContaining(['relation', 'insert', 'update', 'delete', 'message', 'truncate']),
      );
      decoded.acknowledge(events.at(-1)!.walStart);
      await decoded.close();
    });

    it('streams a large transaction through bounded memory when the consumer is slow', async () => {
      const slot = slotName('big');
      slots.push(slot);
      await (await createSlot(target, slot)).release();
      const rowsTotal = 300_000;
      await admin.query(
        `INSERT INTO t_big SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, ${rowsTotal}) g`,
      );
      // ~200 bytes a row, ~60 MB in all: far more than the bound below.
      const payload = Number(await one(admin, 'SELECT sum(octet_length(payload)) FROM t_big'));
      expect(payload).toBeGreaterThan(55_000_000);

      const stream = await openReplicationStream(target, { slot });
      // Live memory, not garbage waiting for a collection: collect before each sample.
      v8.setFlagsFromString('--expose-gc');
      const gc = vm.runInNewContext('gc') as () => void;
      const mem = () => {
        gc();
        const m = process.memoryUsage();
        return { heap: m.heapUsed + m.arrayBuffers, rss: m.rss };
      };
      const base = mem();
      let maxHeap = base.heap;
      let maxRss = base.rss;
      let inserts = 0;
      let seen = 0;
      let sum = 0;
      let commitEnd: Lsn | undefined;
      const t0 = performance.now();
      while (commitEnd === undefined) {
        const ev = await stream.read();
        if (ev === undefined) throw new Error('the stream ended');
        if (ev.kind !== 'data') continue;
        const m = ev.message;
        if (m.tag === 'insert') {
          inserts++;
          sum += Number(m.newTuple[0]);
          expect((m.newTuple[1] as string).length).toBe(192);
        } else if (m.tag === 'commit') {
          commitEnd = m.endLsn;
        }
        if (++seen % 500 === 0) {
          // A slow consumer: the server can send much faster than this.
          await sleep(1);
        }
        if (seen % 20_000 === 0) {
          const now = mem();
          maxHeap = Math.max(maxHeap, now.heap);
          maxRss = Math.max(maxRss, now.rss);
        }
      }
      const seconds = (performance.now() - t0) / 1000;
      expect(inserts).toBe(rowsTotal);
      expect(sum).toBe((rowsTotal * (rowsTotal + 1)) / 2);
      const stats = stream.stats;
      const MB = 1024 * 1024;
      console.info(
        `PostgreSQL ${server.major}: ${inserts} rows (${(stats.bytes / MB).toFixed(0)} MB) in ${seconds.toFixed(1)} s, ` +
          `${stats.pauses} pauses, heap+arrayBuffers +${((maxHeap - base.heap) / MB).toFixed(1)} MB, ` +
          `rss +${((maxRss - base.rss) / MB).toFixed(1)} MB`,
      );
      // Reading paused for the consumer, and live memory stayed far below the transaction's size.
      expect(stats.pauses).toBeGreaterThan(10);
      expect(maxHeap - base.heap).toBeLessThan(64 * MB);
      expect(stream.acknowledge(commitEnd)).toBe(true);
      await stream.close();
      await eventually(async () =>
        expect((await slotInfo(admin, slot))?.confirmedFlushLsn?.value).toBe(commitEnd?.value),
      );
      await dropSlot(admin, slot);
      await admin.query('TRUNCATE t_big');
    });

    it('streams in-progress transactions with protocol 2, each change tagged with its xid', async () => {
      const slot = slotName('strm');
      slots.push(slot);
      await (await createSlot(target, slot)).release();
      await admin.query('BEGIN');
      const x = xid32(await one(admin, 'SELECT pg_current_xact_id()::text'));
      await admin.query(
        'INSERT INTO t_big SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, 3000) g',
      );
      await admin.query('COMMIT');
      await admin.query('BEGIN');
      const y = xid32(await one(admin, 'SELECT pg_current_xact_id()::text'));
      await admin.query(
        'INSERT INTO t_big SELECT g, repeat(md5(g::text), 6) FROM generate_series(3001, 6000) g',
      );
      await admin.query('ROLLBACK');
      await admin.query(`SELECT pg_logical_emit_message(false, 'flashback', 'marker')`);

      const client = await connectParams(target.name, target.connection, { replication: true });
      // Far below the transaction's size, so the server streams it before its commit.
      await client.query(`SET logical_decoding_work_mem = '64kB'`);
      const stream = await startReplication(client, { slot, protoVersion: 2, streaming: true });
      const events = await readUntil(stream, commits(1));
      const tags = new Set(events.map((e) => e.message.tag));
      expect(tags).toEqual(
        new Set(['stream-start', 'relation', 'insert', 'stream-stop', 'stream-commit']),
      );
      const first = events[0]!.message;
      expect(first).toEqual({ tag: 'stream-start', xid: x, firstSegment: true });
      const inserts = events.filter((e) => e.message.tag === 'insert');
      expect(inserts).toHaveLength(3000);
      expect(inserts.every((e) => 'xid' in e.message && e.message.xid === x)).toBe(true);
      expect(events.filter((e) => e.message.tag === 'stream-start').length).toBeGreaterThan(1);
      const end = events.at(-1)!.message;
      expect(end).toMatchObject({ tag: 'stream-commit', xid: x });

      // The rolled-back transaction: 15-17 stream it (it is large) and then abort it;
      // 18 skips decoding a transaction it already knows aborted. Either way no
      // change of it is left without its abort.
      const rest = await readUntil(stream, (e) => e.message.tag === 'message');
      const tail = rest.slice(0, -1).map((e) => e.message);
      if (server.major < 18 || tail.length > 0) {
        expect(tail[0]).toMatchObject({ tag: 'stream-start', xid: y });
        expect(tail.at(-1)).toEqual({ tag: 'stream-abort', xid: y, subXid: y });
        expect(tail.some((m) => m.tag === 'stream-commit')).toBe(false);
      }
      await stream.close();
      await dropSlot(admin, slot);
      await admin.query('TRUNCATE t_big');
    });

    it('creates a slot with an exported snapshot that ends exactly where its changes begin', async () => {
      await admin.query('INSERT INTO t_snap SELECT generate_series(1, 10)');
      const slot = slotName('snap');
      slots.push(slot);
      const created = await createSlot(target, slot, { exportSnapshot: true });
      expect(created.slotName).toBe(slot);
      expect(created.snapshotName).toMatch(/^[0-9A-F-]+$/);
      await expect(createSlot(target, slot)).rejects.toMatchObject({
        code: 'replication.slot-exists',
        serverCode: '42710',
      });
      await admin.query('INSERT INTO t_snap VALUES (11)');

      const reader = await connectTo(server, db);
      await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      await reader.query(`SET TRANSACTION SNAPSHOT '${created.snapshotName}'`);
      expect(await one(reader, 'SELECT count(*) FROM t_snap')).toBe('10');
      await reader.query('COMMIT');
      await reader.end();
      await created.release();
      await created.release();

      const info = await slotInfo(admin, slot);
      expect(info).toMatchObject({
        slotName: slot,
        plugin: 'pgoutput',
        slotType: 'logical',
        database: db,
        temporary: false,
        active: false,
        activePid: undefined,
      });
      expect(info?.confirmedFlushLsn?.value).toBe(created.consistentPoint.value);
      expect(info?.restartLsn?.value).toBeLessThanOrEqual(created.consistentPoint.value);
      expect(info?.retainedWalBytes).toBeGreaterThan(0n);
      expect(['reserved', 'extended']).toContain(info?.walStatus);

      // The change stream starts with the row the snapshot does not have.
      const stream = await openReplicationStream(target, { slot });
      const events = await readUntil(stream, commits(1));
      await stream.close();
      const inserts = events.filter((e) => e.message.tag === 'insert').map((e) => e.message);
      expect(inserts).toEqual([{ tag: 'insert', relationId: oid.t_snap, newTuple: ['11'] }]);

      expect(await dropSlot(admin, slot)).toBe(true);
      expect(await dropSlot(admin, slot)).toBe(false);
      expect(await slotInfo(admin, slot)).toBeUndefined();
    });

    it('reports a terminated walsender, a busy slot and a missing slot as typed errors', async () => {
      const slot = slotName('term');
      slots.push(slot);
      await (await createSlot(target, slot)).release();
      const stream = await openReplicationStream(target, { slot });

      // A second consumer on the same slot is refused.
      const busy = await openReplicationStream(target, { slot }).catch((e: unknown) => e);
      expect(busy).toBeInstanceOf(ReplicationError);
      expect(busy).toMatchObject({ code: 'replication.slot-in-use', serverCode: '55006' });

      let pid: number | undefined;
      await eventually(async () => {
        pid = (await slotInfo(admin, slot))?.activePid;
        expect(pid).toBeDefined();
      });
      await admin.query(`SELECT pg_terminate_backend(${pid})`);
      let caught: unknown;
      try {
        for await (const _ of stream) {
          // keepalives only: nothing changes in this database
        }
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(ReplicationError);
      const e = caught as ReplicationError;
      expect(e.code).toBe('replication.terminated');
      expect(e.serverCode).toBe('57P01');
      expect(e.message).toMatch(
        new RegExp(
          `slot "${slot}" on target "test-pg${server.major}" failed: terminating connection due to administrator command`,
        ),
      );
      expect(e.hint).toMatch(/resumes after the last acknowledged position/);
      await stream.close();

      const missing = await openReplicationStream(target, { slot: 'fb_no_such_slot' }).catch(
        (x: unknown) => x,
      );
      expect(missing).toMatchObject({ code: 'replication.not-found', serverCode: '42704' });
      expect((missing as Error).message).toMatch(/fb_no_such_slot/);

      // The slot is usable again after the failure.
      await eventually(async () => expect((await slotInfo(admin, slot))?.active).toBe(false));
      const again = await openReplicationStream(target, { slot });
      await admin.query('INSERT INTO t_snap VALUES (100)');
      const events = await readUntil(again, commits(1));
      expect(events.filter((x) => x.message.tag === 'insert')).toHaveLength(1);
      await again.close();
      await dropSlot(admin, slot);
    });
  },
);

describe.each(testServers().map((s) => [s.major] as const))(
  'replication client across a restart of PostgreSQL %i',
  (major) => {
    // A private server: the shared ones cannot be restarted under other tests.
    let server: EmbeddedServer;
    beforeAll(async () => {
      server = await EmbeddedServer.start({
        major,
        baseDir: TEST_BASE_DIR,
        settings: { fsync: 'off', max_replication_slots: '4', max_wal_senders: '4' },
      });
    });
    afterAll(async () => server?.stop());

    it('holds a shutdown until the consumer acknowledges what was sent, then reports it and resumes', async () => {
      const target: ReplicationTarget = { name: 'private', connection: server.connection() };
      const admin = await connectParams('private', server.connection());
      await admin.query('CREATE TABLE t (id int PRIMARY KEY)');
      await ensurePublication(admin);
      await (await createSlot(target, 'fb_restart')).release();
      await admin.query('INSERT INTO t VALUES (1)');
      await admin.query('INSERT INTO t VALUES (2)');
      await admin.end();
      const stream = await openReplicationStream(target, { slot: 'fb_restart' });
      const events = await readUntil(stream, commits(2));
      const ends = events.flatMap((e) => (e.message.tag === 'commit' ? [e.message.endLsn] : []));
      // Transaction 1 is stored; transaction 2 is not yet.
      stream.acknowledge(ends[0]!);

      const restarted = server.restart('fast').then(
        () => undefined,
        (e: unknown) => e,
      );
      // The walsender waits for the flush position to reach what it sent, asking for replies.
      let asked = await stream.read();
      while (asked?.kind === 'keepalive' && !asked.replyRequested) asked = await stream.read();
      expect(asked).toMatchObject({ kind: 'keepalive', replyRequested: true });
      await sleep(500);
      expect(isAlive(server.pid)).toBe(true);
      // The consumer stores transaction 2, and is then caught up with the server.
      stream.acknowledge(ends[1]!);
      if (asked?.kind === 'keepalive') stream.acknowledge(asked.walEnd);

      let err: unknown;
      try {
        for (;;) if ((await stream.read()) === undefined) break;
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ReplicationError);
      expect(err).toMatchObject({ code: 'replication.ended' });
      expect((err as Error).message).toMatch(/the server ended the stream/);
      await stream.close();
      expect(await restarted).toBeUndefined();

      // The slot survived the restart. From 17 on, the shutdown checkpoint saves the
      // acknowledged position and only the new change comes; before 17 the slot keeps
      // the position of its last save, so acknowledged transactions can come again
      // (at least once: a consumer skips commits it already stored). Nothing is lost.
      const again = await connectParams('private', server.connection());
      const confirmed = (await slotInfo(again, 'fb_restart'))?.confirmedFlushLsn?.value;
      const askedEnd = asked?.kind === 'keepalive' ? asked.walEnd.value : 0n;
      if (major >= 17) expect(confirmed).toBe(askedEnd);
      else expect(confirmed).toBeLessThanOrEqual(askedEnd);
      await again.query('INSERT INTO t VALUES (3)');
      const resumed = await openReplicationStream(target, { slot: 'fb_restart' });
      const after = await readUntil(resumed, (e, all) =>
        all.some((x) => x.message.tag === 'insert' && x.message.newTuple[0] === '3')
          ? e.message.tag === 'commit'
          : false,
      );
      const ids = after.flatMap((e) => (e.message.tag === 'insert' ? [e.message.newTuple[0]] : []));
      if (major >= 17) expect(ids).toEqual(['3']);
      else expect(['1,2,3', '2,3', '3']).toContain(ids.join(','));
      await resumed.close();
      await dropSlot(again, 'fb_restart');
      await again.end();
    });
  },
);
