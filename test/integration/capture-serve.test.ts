/**
 * Continuous capture inside `flashback serve` (a real process): a target with
 * `capture: true` is captured beside the scheduled jobs; a terminated
 * walsender is logged, alerted (`capture-failed`) and the capture restarted;
 * an unreachable target is retried with exponential backoff; the capture
 * metrics are served; SIGTERM stops it cleanly, and the log holds exactly
 * what the source committed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dropSlot } from '../../src/pg/replication/slot.js';
import {
  auditedTransactions,
  CAPTURE_SCHEMA,
  compareLog,
  sourceRows,
  Writer,
  waitForLog,
} from '../harness/capture.js';
import { CLI, connectTo, freshDatabase, runCli, sql, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17)!;
const env = { PW: server.password };

interface Alert {
  event: string;
  kind: string;
  target: string;
  severity: string;
  message: string;
}

async function until<T>(
  what: string,
  f: () => T | undefined | false,
  ms = 20_000,
  context: () => unknown = () => '',
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) {
      throw new Error(`timed out waiting for ${what} ${JSON.stringify(context(), null, 1)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('capture in serve', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  let hook: Server;
  let hookUrl: string;
  const alerts: Alert[] = [];

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(server, 'capserve');
    await sql(server, db, CAPTURE_SCHEMA);
    hook = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString();
      });
      req.on('end', () => {
        alerts.push((JSON.parse(body) as { flashback: Alert }).flashback);
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
    hookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook`;
  });
  afterAll(async () => {
    const c = await connectTo(server, db);
    await dropSlot(c, 'flashback_zserve', { waitSeconds: 10 }).catch(() => {});
    await c.end();
    await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    await new Promise((r) => hook?.close(r));
    await cleanup();
  });

  it('captures beside the jobs, restarts a failed capture with backoff, alerts, serves metrics, stops cleanly', async () => {
    expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
    // A port nothing listens on: the capture of "down" fails every time.
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const downPort = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const zserve = `  zserve:
    host: ${server.host}
    port: ${server.port}
    database: ${db}
    user: postgres
    password_env: PW
`;
    const head = `repository: repo
serve:
  check_interval: 1s
alerts:
  backoff: 100ms
  webhooks:
    - url_env: HOOK_URL
targets:
`;
    await writeFile(path.join(dir, 'flashback.yaml'), head + zserve);
    // The change log starts (capture creates the slot), then a verified
    // snapshot it covers, so that zserve is healthy but for its capture and
    // snapshots can be made from the log.
    const first = spawn(process.execPath, [CLI, 'capture', 'zserve'], {
      cwd: dir,
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let firstErr = '';
    first.stderr!.on('data', (d: Buffer) => {
      firstErr += d.toString();
    });
    await until('the first capture to start', () => firstErr.includes('resuming from'));
    first.kill('SIGTERM');
    await new Promise((r) => first.once('exit', r));
    expect((await runCli(['backup', 'zserve'], { cwd: dir, env })).code).toBe(0);
    expect((await runCli(['verify', '--latest'], { cwd: dir, env })).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `${head}${zserve}    capture: true
    schedule:
      backup_from_log: "*/3 * * * * *"
  down:
    host: 127.0.0.1
    port: ${downPort}
    database: nothing
    user: postgres
    capture: true
`,
    );

    const serve = startServe(dir, { HOOK_URL: hookUrl });
    let writer: Writer | undefined;
    try {
      const address = await until('the service to listen', () => {
        const l = serve.logs.find((x) => x.msg === 'flashback serve started');
        return l === undefined ? undefined : String(l.listen);
      });
      await until('capture of zserve to stream', () =>
        serve.logs.some((l) => String(l.msg).startsWith('capture zserve: streaming')),
      );
      writer = new Writer(() => connectTo(server, db), { bulkEveryMs: 0, pauseMs: 5 }).start();
      await new Promise((r) => setTimeout(r, 1500));

      // The walsender goes away: capture fails, is logged, alerted and restarted.
      const killed = await sql(
        server,
        db,
        "SELECT pg_terminate_backend(active_pid)::text AS ok FROM pg_replication_slots WHERE slot_name = 'flashback_zserve'",
      );
      expect(killed[0]?.ok).toBe('true');
      const failed = await until('the failure to be logged', () =>
        serve.logs.find((l) => String(l.msg).startsWith('capture zserve: failed')),
      );
      expect(failed.level).toBe(50);
      expect(String(failed.msg)).toContain('retrying in 1 s');
      const alert = await until('a capture-failed alert for zserve', () =>
        alerts.find((a) => a.target === 'zserve' && a.kind === 'capture-failed'),
      );
      expect(alert.severity).toBe('warning');
      expect(alert.message).toContain('terminat');
      await until('capture of zserve to store again', () =>
        serve.logs.find(
          (l) => String(l.msg) === 'capture zserve: storing again after 1 failure(s)',
        ),
      );
      await until('zserve to be alerted as recovered', () =>
        alerts.find((a) => a.target === 'zserve' && a.event === 'recovered'),
      );

      // "down" is retried with exponential backoff: 1 s, 2 s, 4 s, ...
      const delays = await until('three failed attempts of down', () => {
        const d = serve.logs
          .filter((l) => String(l.msg).startsWith('capture down: failed'))
          .map((l) => l.retryInMs);
        return d.length >= 3 ? d : undefined;
      });
      expect(delays.slice(0, 3)).toEqual([1000, 2000, 4000]);
      const down = alerts.filter((a) => a.target === 'down' && a.kind === 'capture-failed');
      // One alert per failure streak, not one per attempt.
      expect(down).toHaveLength(1);
      expect(down[0]!.message).toContain('failed 1 time(s)');

      const metrics = await (await fetch(`http://${address}/metrics`)).text();
      expect(metrics).toMatch(
        /^flashback_capture_transactions_total\{target="zserve"\} [1-9]\d*$/m,
      );
      expect(metrics).toMatch(/^flashback_capture_changes_total\{target="zserve"\} [1-9]\d*$/m);
      const p50 = Number(
        /^flashback_capture_lag_seconds\{quantile="0.5",target="zserve"\} (\S+)$/m.exec(
          metrics,
        )?.[1],
      );
      const p99 = Number(
        /^flashback_capture_lag_seconds\{quantile="0.99",target="zserve"\} (\S+)$/m.exec(
          metrics,
        )?.[1],
      );
      expect(p50).toBeGreaterThanOrEqual(0);
      expect(p99).toBeGreaterThanOrEqual(p50);
      expect(p99).toBeLessThan(10);
      const rpo = Number(
        /^flashback_recovery_point_seconds\{target="zserve"\} (\S+)$/m.exec(metrics)?.[1],
      );
      expect(rpo).toBeGreaterThanOrEqual(0);
      expect(rpo).toBeLessThan(10);
      expect(metrics).toMatch(/^flashback_capture_running\{target="zserve"\} 1$/m);
      expect(metrics).toMatch(/^flashback_capture_running\{target="down"\} 0$/m);
      expect(metrics).toMatch(/^flashback_capture_failures_total\{target="zserve"\} 1$/m);
      expect(metrics).toMatch(/^flashback_slot_retained_wal_bytes\{target="zserve"\} \d+$/m);
      // The target has a snapshot: the log stored after it is measured.
      expect(metrics).toMatch(
        /^flashback_change_log_bytes_since_snapshot\{target="zserve"\} \d+$/m,
      );
      const health = (await (await fetch(`http://${address}/healthz`)).json()) as {
        captures: Array<{ target: string; state: string; failures: number }>;
      };
      expect(health.captures).toEqual([
        expect.objectContaining({ target: 'down', state: 'waiting' }),
        expect.objectContaining({ target: 'zserve', state: 'streaming', failures: 0 }),
      ]);
      // Snapshots from the log on schedule, without reading the source.
      const fromLog = await until(
        'a scheduled backup --from-log',
        () =>
          serve.logs.find((l) =>
            /^backup --from-log zserve: snapshot \S+ committed from snapshot \S+ and [1-9][\d,]* transaction/.test(
              String(l.msg),
            ),
          ),
        20_000,
        () => serve.logs.filter((l) => String(l.msg).includes('from-log')).slice(-8),
      );
      expect(fromLog.level).toBe(30);
      // Never refused while capture is storing (a log complete up to a
      // keepalive's position, past its last commit, reaches that position).
      expect(
        serve.logs.filter((l) => String(l.msg).startsWith('backup --from-log zserve: failed')),
      ).toEqual([]);
      figures = `lag p50 ${p50.toFixed(3)} s, p99 ${p99.toFixed(3)} s, recovery point ${rpo.toFixed(1)} s`;
    } finally {
      await writer?.stop();
    }

    // Everything the writer committed reaches the log; then SIGTERM stops cleanly.
    const c = await connectTo(server, db);
    const audited = await auditedTransactions(c);
    const rows = await sourceRows(c);
    await c.end();
    const logged = await waitForLog(path.join(dir, 'repo'), audited, 20_000, 'zserve');
    serve.child.kill('SIGTERM');
    expect(await serve.exited).toBe(0);
    const stopped = serve.logs.find((l) => String(l.msg).startsWith('capture zserve: stopped'));
    expect(String(stopped?.msg)).toMatch(/the change log is complete up to [0-9A-F]+\/[0-9A-F]+/);
    expect(serve.logs.at(-1)?.msg).toBe('flashback serve stopped');
    const result = compareLog(logged, audited, rows);
    expect(result.missing).toEqual([]);
    expect(result.duplicated).toEqual([]);
    expect(result.different).toEqual([]);
    expect(result.replayMatches).toBe(true);
    expect(result.transactions).toBeGreaterThan(50);
    console.log(`capture in serve: ${result.transactions} transactions; ${figures}`);
  });
});

let figures = '';

interface Running {
  readonly child: ChildProcess;
  readonly logs: Array<Record<string, unknown>>;
  readonly exited: Promise<number | null>;
}

function startServe(dir: string, extraEnv: Record<string, string>): Running {
  const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0'], {
    cwd: dir,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env, ...extraEnv },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const r: Running = {
    child,
    logs: [],
    exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))),
  };
  let buf = '';
  child.stdout!.on('data', (c: Buffer) => {
    buf += c.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        r.logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        r.logs.push({ msg: line });
      }
    }
  });
  return r;
}
