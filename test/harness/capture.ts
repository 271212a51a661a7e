/**
 * Helpers for capture tests: a writer that commits small transactions
 * continuously while a test breaks things, `flashback capture` as a real
 * process that is restarted whenever it exits, and the proof that the change
 * log holds exactly what the source committed.
 *
 * The truth is the source's own: an audit trigger records, inside each
 * writer transaction, every row change with the transaction's id. It commits
 * or rolls back with the change, so after any crash the audit table lists
 * exactly the transactions that committed (the writer itself cannot know
 * whether a COMMIT interrupted by a server crash went through).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { PgClient } from '../../src/pg/connect.js';
import { ChangeLog, readTransactions, type Transaction } from '../../src/repo/changelog.js';
import { LocalStorage } from '../../src/storage/local.js';
import { CLI, type CliResult, runCli, type TestServer } from './pg.js';

/** The captured table and the audit trail the trigger keeps of it. */
export const CAPTURE_SCHEMA = `
  CREATE TABLE items (id int PRIMARY KEY, v text, n int NOT NULL, amount numeric, at timestamptz);
  CREATE TABLE audit (
    seq bigserial PRIMARY KEY,
    xid bigint NOT NULL DEFAULT txid_current(),
    op text NOT NULL,
    row jsonb NOT NULL
  );
  CREATE FUNCTION audit_items() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    IF TG_OP = 'DELETE' THEN
      INSERT INTO audit (op, row) VALUES ('delete', jsonb_build_array(OLD.id::text));
      RETURN OLD;
    END IF;
    INSERT INTO audit (op, row) VALUES (lower(TG_OP),
      jsonb_build_array(NEW.id::text, NEW.v, NEW.n::text, NEW.amount::text, NEW.at::text));
    RETURN NEW;
  END $$;
  CREATE TRIGGER audit_items AFTER INSERT OR UPDATE OR DELETE ON items
    FOR EACH ROW EXECUTE FUNCTION audit_items();
  CREATE TABLE bulk (id bigint PRIMARY KEY, payload text);
`;

/** Text values whose exact form is easy to get wrong. */
const VALUES = [
  'plain',
  "it's",
  'tab\there',
  'new\nline',
  'back\\slash',
  '"quoted"',
  'é 😀',
  '{1,2}',
  'NULL',
  '',
  null,
];
const AMOUNTS = ['12.340', '-0.5', 'NaN', '100000000000000000000.000001', null];

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Commits small transactions (1 to 3 inserts, updates and deletes on
 * `items`, keys 1..ids) on `connections` connections at once until
 * stopped; reconnects after any error (a crash, a restart, a deadlock).
 * On one more connection, every `bulkEveryMs` a large transaction inserts
 * `bulkRows` rows into `bulk` (and changes one row of `items`): it takes
 * longer to stream than capture's flush interval, so it is stored across
 * segments, and a fault can strike in its middle.
 */
export class Writer {
  /** COMMITs the server acknowledged, of transactions that changed a row. */
  committed = 0;
  /** Transactions that failed (the server may still have committed some). */
  failed = 0;
  private stopping = false;
  private readonly loops: Promise<void>[] = [];

  constructor(
    private readonly connect: () => Promise<PgClient>,
    private readonly options: {
      connections?: number;
      ids?: number;
      pauseMs?: number;
      bulkEveryMs?: number;
      bulkRows?: number;
    } = {},
  ) {}

  /** Large transactions the server acknowledged. */
  bulkCommitted = 0;

  start(): this {
    for (let i = 0; i < (this.options.connections ?? 2); i++) this.loops.push(this.loop());
    if ((this.options.bulkEveryMs ?? 1500) > 0) this.loops.push(this.bulkLoop());
    return this;
  }

  private async bulkLoop(): Promise<void> {
    const rows = this.options.bulkRows ?? 20_000;
    let next = 1;
    let c: PgClient | undefined;
    while (!this.stopping) {
      await sleep(this.options.bulkEveryMs ?? 1500);
      if (this.stopping) break;
      const from = next;
      next += rows;
      try {
        c ??= await this.connect();
        await c.query('BEGIN');
        await c.query(
          "INSERT INTO bulk SELECT g, repeat(md5(g::text), 2) || E'\\t\\n' FROM generate_series($1::bigint, $2::bigint) g",
          [from, from + rows - 1],
        );
        await c.query(
          `INSERT INTO items VALUES ($1, 'bulk', 0, NULL, clock_timestamp())
           ON CONFLICT (id) DO UPDATE SET v = 'bulk', n = items.n + 1`,
          [randomInt(1, (this.options.ids ?? 60) + 1)],
        );
        await c.query('COMMIT');
        this.bulkCommitted++;
      } catch {
        this.failed++;
        await c?.end().catch(() => {});
        c = undefined;
      }
    }
    await c?.end().catch(() => {});
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
  }

  private async loop(): Promise<void> {
    const ids = this.options.ids ?? 60;
    let c: PgClient | undefined;
    while (!this.stopping) {
      try {
        c ??= await this.connect();
        await c.query('BEGIN');
        let changed = 0;
        for (let i = randomInt(1, 4); i > 0; i--) {
          const id = randomInt(1, ids + 1);
          const v = VALUES[randomInt(VALUES.length)] ?? null;
          const amount = AMOUNTS[randomInt(AMOUNTS.length)] ?? null;
          let r: { rowCount: number | null };
          switch (randomInt(3)) {
            case 0:
              r = await c.query(
                `INSERT INTO items VALUES ($1, $2, 0, $3, clock_timestamp())
                 ON CONFLICT (id) DO UPDATE SET v = excluded.v, n = items.n + 1`,
                [id, v, amount],
              );
              break;
            case 1:
              r = await c.query('UPDATE items SET v = $2, n = n + 1, amount = $3 WHERE id = $1', [
                id,
                v,
                amount,
              ]);
              break;
            default:
              r = await c.query('DELETE FROM items WHERE id = $1', [id]);
          }
          changed += r.rowCount ?? 0;
        }
        await c.query('COMMIT');
        // One that changed nothing has no transaction id, no commit record, nothing to capture.
        if (changed > 0) this.committed++;
      } catch {
        this.failed++;
        await c?.end().catch(() => {});
        c = undefined;
        await sleep(50);
      }
      await sleep(this.options.pauseMs ?? 3);
    }
    await c?.end().catch(() => {});
  }
}

/** One run of the capture process. */
export interface CaptureRun {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
}

/**
 * `flashback capture prod` (or `args`) in `dir`, started again `restartMs`
 * after every exit until `stop()`: the supervisor a test (or serve) would be.
 */
export class CaptureProcess {
  readonly runs: CaptureRun[] = [];
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private stderr = '';
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly dir: string,
    private readonly env: Record<string, string>,
    private readonly args: readonly string[] = [
      'capture',
      'prod',
      '--flush-interval',
      '200ms',
      '--heartbeat',
      '1s',
    ],
    private readonly restartMs = 200,
  ) {}

  /** Output of the current (or last) run. */
  get output(): string {
    return this.stderr;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  start(): this {
    this.timer = undefined;
    if (this.stopped) return this;
    this.stderr = '';
    const child = spawn(process.execPath, [CLI, ...this.args], {
      cwd: this.dir,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...this.env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    child.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.runs.push({ code, signal, stderr: this.stderr });
        this.child = undefined;
        if (!this.stopped) this.timer = setTimeout(() => this.start(), this.restartMs);
        resolve();
      });
    });
    return this;
  }

  /** Waits until the current run says it is streaming (slot created or resumed). */
  async streaming(timeoutMs = 20_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    // (Target names are [a-z0-9_]: nothing to escape.)
    const started = new RegExp(`capture ${this.args[1] ?? 'prod'}: (created|using) slot`);
    while (this.child === undefined || !started.test(this.stderr)) {
      if (Date.now() > end) {
        throw new Error(
          `capture did not start streaming; runs: ${JSON.stringify(this.runs.slice(-3))}, now: ${this.stderr}`,
        );
      }
      await sleep(50);
    }
  }

  kill(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }

  /** Stops for good: SIGTERM (capture stores what it received) and waits; the last run's exit code. */
  async stop(): Promise<CaptureRun | undefined> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.child?.kill('SIGTERM');
    await this.exited;
    return this.runs.at(-1);
  }
}

/** A committed writer transaction, as the source's audit trail has it. */
export interface AuditedTransaction {
  readonly xid: number;
  readonly changes: ReadonlyArray<readonly [op: string, row: ReadonlyArray<string | null>]>;
}

/** Every transaction the audit trail recorded, with its changes in order. */
export async function auditedTransactions(c: PgClient): Promise<Map<number, AuditedTransaction>> {
  const r = await c.query<{ xid: string; op: string; row: string }>(
    'SELECT (xid % 4294967296)::text AS xid, op, row::text AS row FROM audit ORDER BY seq',
  );
  const out = new Map<number, { xid: number; changes: Array<[string, Array<string | null>]> }>();
  for (const a of r.rows) {
    const xid = Number(a.xid);
    let t = out.get(xid);
    if (t === undefined) {
      t = { xid, changes: [] };
      out.set(xid, t);
    }
    t.changes.push([a.op, JSON.parse(a.row) as Array<string | null>]);
  }
  return out;
}

/** The source's rows of `items`, keyed and in key order, as text. */
export async function sourceRows(c: PgClient): Promise<Array<Array<string | null>>> {
  const r = await c.query<{ r: string }>(
    'SELECT jsonb_build_array(id::text, v, n::text, amount::text, at::text)::text AS r FROM items ORDER BY id',
  );
  return r.rows.map((x) => JSON.parse(x.r) as Array<string | null>);
}

/** Rows in `bulk` on the source. */
export async function bulkCount(c: PgClient): Promise<number> {
  return Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM bulk')).rows[0]!.n);
}

/** The source's real state at a moment: the WAL position that separates it, and its rows. */
export interface Moment {
  readonly lsn: string;
  readonly rows: Array<Array<string | null>>;
  readonly bulk: number;
}

/**
 * Records the source's real state every `everyMs` while the writer runs,
 * independently of capture: under an EXCLUSIVE lock on the written tables
 * (taken bulk first, in the bulk writer's order, so no deadlock), every
 * transaction that wrote before has ended and new ones wait; the WAL insert
 * position then separates them: every transaction committed before it is in
 * the rows read, none after it. `restore --lsn` of that position must give
 * exactly these rows. A moment that fails (a restarting server) is skipped.
 */
export class MomentRecorder {
  readonly moments: Moment[] = [];
  private stopping = false;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly connect: () => Promise<PgClient>,
    private readonly everyMs = 400,
  ) {}

  start(): this {
    this.loop = this.run();
    return this;
  }

  async stop(): Promise<Moment[]> {
    this.stopping = true;
    await this.loop;
    return this.moments;
  }

  private async run(): Promise<void> {
    let c: PgClient | undefined;
    while (!this.stopping) {
      await sleep(this.everyMs);
      if (this.stopping) break;
      try {
        c ??= await this.connect();
        await c.query('BEGIN');
        await c.query('LOCK TABLE bulk, items IN EXCLUSIVE MODE');
        const lsn = (await c.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l'))
          .rows[0]!.l;
        const rows = await sourceRows(c);
        const bulk = await bulkCount(c);
        await c.query('COMMIT');
        this.moments.push({ lsn, rows, bulk });
      } catch {
        await c?.end().catch(() => {});
        c = undefined;
      }
    }
    await c?.end().catch(() => {});
  }
}

/** The log's transactions, in log order. */
export async function loggedTransactions(repoDir: string, scope = 'prod'): Promise<Transaction[]> {
  const out: Transaction[] = [];
  for await (const t of readTransactions(new ChangeLog(new LocalStorage(repoDir), scope))) {
    out.push(t);
  }
  return out;
}

/** What the raw segments hold, beyond what readers see. */
export interface SegmentStats {
  readonly segments: number;
  /** Commit records, and distinct commits: more records than commits when some were stored twice. */
  readonly commits: number;
  readonly unique: number;
  /** Transactions whose Begin and Commit are in different segments. */
  readonly split: number;
  /** Transactions cut off (a Begin while one was open): stored again, whole, later. */
  readonly cutOff: number;
}

/** Reads every segment of the log of `prod`. */
export async function segmentStats(repoDir: string): Promise<SegmentStats> {
  const log = new ChangeLog(new LocalStorage(repoDir), 'prod');
  const ends = new Set<string>();
  let commits = 0;
  let split = 0;
  let cutOff = 0;
  let open: number | undefined;
  const segments = await log.segments();
  for (const seg of segments) {
    for (const r of await log.readSegment(seg)) {
      if (r[0] === 'B') {
        if (open !== undefined) cutOff++;
        open = seg.seq;
      } else if (r[0] === 'C') {
        commits++;
        ends.add(r[2]);
        if (open !== undefined && open !== seg.seq) split++;
        open = undefined;
      }
    }
  }
  return { segments: segments.length, commits, unique: ends.size, split, cutOff };
}

/** A logged transaction's changes to `items` in the audit trail's form. */
export function itemChanges(t: Transaction): Array<[string, Array<string | null>]> {
  return [...t.changes]
    .filter((c) => c.schema === 'public' && c.table === 'items')
    .map((c) => {
      const text = (v: readonly (string | null | 0)[]): Array<string | null> =>
        v.map((x) => (x === 0 ? '<unchanged toast>' : x));
      if (c.op === 'delete') return ['delete', text(c.key ?? c.old ?? []).slice(0, 1)];
      return [c.op, text(c.row ?? [])];
    });
}

/** Waits until the log holds every audited transaction (or the time is up). */
export async function waitForLog(
  repoDir: string,
  expected: ReadonlyMap<number, AuditedTransaction>,
  timeoutMs = 20_000,
  /** The target's scope in the repository. */
  scope = 'prod',
): Promise<Transaction[]> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const logged = await loggedTransactions(repoDir, scope).catch(() => []);
    const xids = new Set(logged.map((t) => t.xid));
    if ([...expected.keys()].every((x) => xids.has(x)) || Date.now() > end) return logged;
    await sleep(200);
  }
}

/** What the comparison found; every list is empty when the log is exact. */
export interface LogComparison {
  readonly transactions: number;
  readonly changes: number;
  /** Committed on the source, not in the log. */
  readonly missing: number[];
  /** In the log more than once. */
  readonly duplicated: number[];
  /** In the log, never committed by the writer. */
  readonly unexpected: number[];
  /** In both, with different changes. */
  readonly different: Array<{ xid: number; source: unknown; log: unknown }>;
  /** Positions where a commit LSN is not after the one before. */
  readonly outOfOrder: number[];
  /** Replaying the log from empty ends in the source's rows. */
  readonly replayMatches: boolean;
  /** Inserts into `bulk` in the log, and how many distinct keys they have. */
  readonly bulkInserts: number;
  readonly bulkKeys: number;
}

/**
 * Compares the log with the source's truth: the same transactions (by xid),
 * each once, with the same changes in the same order and values, in
 * commit-LSN order; and replaying them gives the source's final rows (which
 * also proves the order of conflicting transactions).
 */
export function compareLog(
  logged: readonly Transaction[],
  audited: ReadonlyMap<number, AuditedTransaction>,
  finalRows: ReadonlyArray<ReadonlyArray<string | null>>,
): LogComparison {
  const seen = new Map<number, number>();
  const duplicated: number[] = [];
  const unexpected: number[] = [];
  const different: LogComparison['different'] = [];
  const outOfOrder: number[] = [];
  const rows = new Map<string, Array<string | null>>();
  let changes = 0;
  let bulkInserts = 0;
  const bulkKeys = new Set<string>();
  logged.forEach((t, i) => {
    if (i > 0 && t.commitLsn <= logged[i - 1]!.commitLsn) outOfOrder.push(i);
    for (const c of t.changes) {
      if (c.table === 'bulk' && c.op === 'insert') {
        bulkInserts++;
        bulkKeys.add(String(c.row?.[0]));
      }
    }
    const mine = itemChanges(t);
    changes += mine.length;
    for (const [op, row] of mine) {
      if (op === 'delete') rows.delete(row[0]!);
      else rows.set(row[0]!, row);
    }
    if (mine.length === 0) return;
    seen.set(t.xid, (seen.get(t.xid) ?? 0) + 1);
    if (seen.get(t.xid) === 2) duplicated.push(t.xid);
    const truth = audited.get(t.xid);
    if (truth === undefined) unexpected.push(t.xid);
    else if (JSON.stringify(truth.changes) !== JSON.stringify(mine)) {
      different.push({ xid: t.xid, source: truth.changes, log: mine });
    }
  });
  const missing = [...audited.keys()].filter((x) => !seen.has(x));
  const replayed = [...rows.values()].sort((a, b) => Number(a[0]) - Number(b[0]));
  return {
    transactions: seen.size,
    changes,
    missing,
    duplicated,
    unexpected,
    different: different.slice(0, 3),
    outOfOrder,
    replayMatches: JSON.stringify(replayed) === JSON.stringify(finalRows),
    bulkInserts,
    bulkKeys: bulkKeys.size,
  };
}

/** `flashback capture TARGET` in `dir`, storing and beating often, so a test waits little. */
export function quickCapture(
  dir: string,
  env: Record<string, string>,
  target: string,
): CaptureProcess {
  return new CaptureProcess(dir, env, [
    'capture',
    target,
    '--flush-interval',
    '200ms',
    '--heartbeat',
    '300ms',
  ]);
}

/** The server's clock now, as `--at` takes it: UTC, microseconds. */
export async function serverMoment(c: PgClient): Promise<string> {
  return (
    await c.query<{ t: string }>(
      `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
    )
  ).rows[0]!.t;
}

/** A target with a change log, for tests of what the log rebuilds (capturedTarget). */
export interface CapturedTarget {
  /** Runs the CLI in the target's directory, with its password. */
  run(args: readonly string[]): Promise<CliResult>;
  /** Stops capture and drops its slot (in `finally`). */
  stop(): Promise<void>;
}

/**
 * Database `db` of `server` as unprotected target `name`: a repository in
 * `dir`, capture running (quickCapture), and a first snapshot taken while
 * it runs, so every moment from now on can be rebuilt.
 */
export async function capturedTarget(
  server: TestServer,
  db: string,
  name: string,
  dir: string,
  /** Run once the target is configured, before capture starts (what a target without a log does). */
  beforeCapture?: (run: CapturedTarget['run']) => Promise<void>,
): Promise<CapturedTarget> {
  const env = { PW: server.password };
  const run = (args: readonly string[]) => runCli(args, { cwd: dir, env });
  const init = await run(['init', '--force', '--repo', 'repo']);
  if (init.code !== 0) throw new Error(`init failed: ${init.stderr}`);
  await writeFile(
    path.join(dir, 'flashback.yaml'),
    `repository: repo\ntargets:\n  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n    protected: false\n`,
  );
  await beforeCapture?.(run);
  const capture = quickCapture(dir, env, name).start();
  const stop = async () => {
    await capture.stop();
    await run(['capture', name, '--drop-slot', '--confirm', name]);
  };
  try {
    await capture.streaming();
    const backup = await run(['backup', name]);
    if (backup.code !== 0) throw new Error(`backup failed: ${backup.stderr}`);
  } catch (err) {
    await stop();
    throw err;
  }
  return { run, stop };
}
