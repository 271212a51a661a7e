/**
 * `flashback serve` as a real process: scheduled backups and verifications,
 * alerts to a real local HTTP receiver (Slack-compatible JSON, retried after
 * a failed delivery), a freshness threshold crossed and recovered, a target
 * that is down, a corrupted chunk caught by the scheduled verify, Prometheus
 * metrics and /healthz scraped over HTTP, and a clean stop on SIGTERM in the
 * middle of a backup.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { RunStore } from '../../src/repo/runs.js';
import { createSampleDatabase } from '../../src/sample/saas.js';
import { LocalStorage } from '../../src/storage/local.js';
import { CLI, connectTo, freshDatabase, runCli, tempDir, testServers } from '../harness/pg.js';

const run = promisify(execFile);
const server = testServers().find((s) => s.major === 17)!;
const env = { PW: server.password };

interface Received {
  readonly body: {
    text: string;
    flashback: {
      event: string;
      kind: string;
      target: string;
      snapshot?: string;
      severity: string;
      message: string;
    };
  };
  readonly status: number;
}

/** A webhook receiver: answers 500 to the first request, then 200; keeps every request. */
async function receiver(): Promise<{
  url: string;
  received: Received[];
  close: () => Promise<void>;
}> {
  const received: Received[] = [];
  let first = true;
  const http: Server = createServer((req, res) => {
    let data = '';
    req.on('data', (c: Buffer) => {
      data += c.toString();
    });
    req.on('end', () => {
      const status = first ? 500 : 200;
      first = false;
      received.push({ body: JSON.parse(data) as Received['body'], status });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    received,
    close: () => new Promise((r) => http.close(() => r())),
  };
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

interface Running {
  readonly child: ChildProcess;
  readonly logs: Array<Record<string, unknown>>;
  stderr: string;
  readonly exited: Promise<number | null>;
}

function startServe(dir: string, extraEnv: Record<string, string> = {}): Running {
  const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0'], {
    cwd: dir,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env, ...extraEnv },
  });
  const r: Running = {
    child,
    logs: [],
    stderr: '',
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
  child.stderr!.on('data', (c: Buffer) => {
    r.stderr += c.toString();
  });
  return r;
}

async function until<T>(what: string, f: () => T | undefined | false, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stop(r: Running): Promise<number | null> {
  r.child.kill('SIGTERM');
  return r.exited;
}

function listenAddress(r: Running): string | undefined {
  const started = r.logs.find((l) => l.msg === 'flashback serve started');
  return started === undefined ? undefined : String(started.listen);
}

describe('serve', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  let hook: Awaited<ReturnType<typeof receiver>>;

  const config = (prod: string, extra = ''): string =>
    `repository: repo
serve:
  check_interval: 1s
alerts:
  backoff: 100ms
  webhooks:
    - url_env: HOOK_URL
targets:
  prod:
    host: ${server.host}
    port: ${server.port}
    database: ${db}
    user: postgres
    password_env: PW
${prod}${extra}`;

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(server, 'serve');
    const c = await connectTo(server, db);
    await createSampleDatabase(c, { tenants: 10 });
    await c.end();
    expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
    hook = await receiver();
  });
  afterAll(async () => {
    await hook?.close();
    await cleanup();
  });

  it('backs up on schedule, alerts a target that is down and a freshness threshold crossed and recovered, and serves metrics', async () => {
    await writeFile(path.join(dir, 'flashback.yaml'), config(''));
    expect((await runCli(['backup', 'prod'], { cwd: dir, env })).code).toBe(0);
    expect((await runCli(['verify', '--latest'], { cwd: dir, env })).code).toBe(0);
    const port = await closedPort();
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      config(
        `    freshness: { backup_warning: 3s, backup_critical: 1h, verified_warning: 1h, verified_critical: 2h }
    schedule:
      backup: "*/5 * * * * *"
`,
        `  down:
    host: 127.0.0.1
    port: ${port}
    database: nothing
    user: postgres
    schedule:
      backup: "*/4 * * * * *"
`,
      ),
    );
    await new Promise((r) => setTimeout(r, 3100)); // prod's snapshot is now past its 3 s warning
    const serve = startServe(dir, { HOOK_URL: hook.url });
    try {
      const address = await until('the service to listen', () => listenAddress(serve));
      const alerts = () => hook.received.map((r) => r.body.flashback);
      await until('an alert that "down" failed', () =>
        alerts().find((a) => a.target === 'down' && a.kind === 'backup-failed'),
      );
      const index = (f: (a: ReturnType<typeof alerts>[number]) => boolean) => () => {
        const i = alerts().findIndex(f);
        return i < 0 ? undefined : { i };
      };
      const warned = await until(
        'a freshness warning for prod',
        index((a) => a.target === 'prod' && a.kind === 'backup-age'),
      );
      expect(alerts()[warned.i]!.severity).toBe('warning');
      const recovered = await until(
        'prod to recover after its scheduled backup',
        index((a) => a.target === 'prod' && a.event === 'recovered'),
      );
      expect(recovered.i).toBeGreaterThan(warned.i);

      const down = alerts().find((a) => a.target === 'down' && a.kind === 'backup-failed')!;
      expect(down.severity).toBe('critical');
      expect(down.message).toContain('FAILED');
      // Slack-compatible: the text says it all.
      const text = hook.received.find((r) => r.body.flashback.target === 'down')!.body.text;
      expect(text).toContain('CRITICAL: down');
      // The first delivery got a 500 and was retried: the same alert arrived twice.
      expect(hook.received[0]!.status).toBe(500);
      expect(hook.received[1]!.body).toEqual(hook.received[0]!.body);

      const metrics = await (await fetch(`http://${address}/metrics`)).text();
      expect(metrics).toMatch(/^flashback_backup_age_seconds\{target="prod"\} \d+/m);
      expect(metrics).toMatch(/^flashback_status\{target="down"\} 2$/m);
      expect(metrics).toMatch(/^flashback_last_run_success\{target="prod",job="backup"\} 1$/m);
      expect(metrics).toMatch(/^flashback_last_run_success\{target="down",job="backup"\} 0$/m);
      expect(metrics).toMatch(
        /^flashback_runs_total\{target="prod",job="backup",result="success"\} [1-9]/m,
      );
      const health = await fetch(`http://${address}/healthz`);
      expect(health.status).toBe(200);
      const h = (await health.json()) as { status: string; backups: string };
      expect(h.status).toBe('ok');
      expect(h.backups).toBe('critical');
    } finally {
      expect(await stop(serve)).toBe(0);
    }
    expect(serve.logs.some((l) => l.msg === 'flashback serve stopped')).toBe(true);

    // The failures were recorded: `status` says critical without the service.
    const st = await runCli(['status', '--target', 'down'], { cwd: dir, env });
    expect(st.code, st.stdout + st.stderr).toBe(ExitCode.critical);
    expect(st.stdout).toMatch(/critical: the last backup of "down" FAILED/);
    expect(st.stdout).toContain('connect');
  });

  it('alerts when the scheduled verify finds a corrupted chunk, naming the snapshot', async () => {
    await writeFile(path.join(dir, 'flashback.yaml'), config(''));
    const b = await runCli(['backup', 'prod', '--json'], { cwd: dir, env });
    expect(b.code, b.stderr).toBe(0);
    const snapshot = (JSON.parse(b.stdout) as { snapshot: string }).snapshot;
    const m = JSON.parse(
      await readFile(path.join(dir, 'repo', 'snapshots', `${snapshot}.json`), 'utf8'),
    ) as { tables: Array<{ name: string; chunks: Array<{ id: string }> }> };
    const id = m.tables.find((t) => t.name === 'tenants')!.chunks[0]!.id;
    const file = path.join(dir, 'repo', 'chunks', id.slice(0, 2), id);
    const bytes = await readFile(file);
    bytes[bytes.length - 5]! ^= 0x55;
    await writeFile(file, bytes);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      config('    schedule:\n      verify: "*/2 * * * * *"\n'),
    );
    const before = hook.received.length;
    const serve = startServe(dir, { HOOK_URL: hook.url });
    try {
      const alert = await until('an alert for the failed verification', () =>
        hook.received
          .slice(before)
          .map((r) => r.body.flashback)
          .find((a) => a.kind === 'verify-failed'),
      );
      expect(alert.snapshot).toBe(snapshot);
      expect(alert.severity).toBe('critical');
      expect(alert.message).toContain(snapshot);
      expect(alert.message).toContain('public.tenants');
    } finally {
      expect(await stop(serve)).toBe(0);
    }
    // Put the chunk back for the next test.
    bytes[bytes.length - 5]! ^= 0x55;
    await writeFile(file, bytes);
    const st = await runCli(['status', '--target', 'prod'], { cwd: dir, env });
    expect(st.code).toBe(ExitCode.critical);
    expect(st.stdout).toContain(`snapshot ${snapshot} of "prod" FAILED verification`);
  });

  it('records a scheduled verify that had nothing to verify (no missed-run), and keeps running on SIGHUP', async () => {
    await writeFile(path.join(dir, 'flashback.yaml'), config(''));
    // An older snapshot left unverified: the schedule verifies the newest, not it.
    expect((await runCli(['backup', 'prod'], { cwd: dir, env })).code).toBe(0);
    expect((await runCli(['backup', 'prod'], { cwd: dir, env })).code).toBe(0);
    expect((await runCli(['verify', '--latest'], { cwd: dir, env })).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      config('    schedule:\n      verify: "*/2 * * * * *"\n'),
    );
    const serve = startServe(dir, { HOOK_URL: hook.url });
    try {
      // A hangup (the SSH session that started it closed) does not stop it:
      // Node undoes nohup's ignoring of SIGHUP, and it died silently (129).
      await until('serve started', () => serve.logs.length > 0 || undefined);
      serve.child.kill('SIGHUP');
      await until('the hangup noted', () => serve.stderr.includes('SIGHUP ignored') || undefined);
      await until('two verifies with nothing to do', () =>
        serve.logs.filter((l) => String(l.msg).includes('nothing to verify')).length >= 2
          ? true
          : undefined,
      );
      expect(serve.child.exitCode).toBe(null);
      expect(serve.logs.filter((l) => String(l.msg).includes(' verified: restore'))).toEqual([]);
      // An edit of the configuration is said, not silently ignored; a broken one at once.
      const file = path.join(dir, 'flashback.yaml');
      const good = await readFile(file, 'utf8');
      await writeFile(
        file,
        good.replace('check_interval: 1s', 'check_interval: 1s\n  bogus_key: 1'),
      );
      const broken = await until('the broken configuration said', () =>
        serve.logs.find((l) => String(l.msg).includes('changed and is no longer valid')),
      );
      expect(broken.level).toBe(50); // (pino's error)
      await writeFile(file, good);
      await until('the edit said', () =>
        serve.logs.find((l) => String(l.msg).endsWith('restart it to apply the change')),
      );
    } finally {
      expect(await stop(serve)).toBe(0);
    }
    const runs = (await readdir(path.join(dir, 'repo', 'runs', 'prod'))).filter((f) =>
      f.includes('-verify-'),
    );
    const noOps = [];
    for (const f of runs) {
      const r = JSON.parse(await readFile(path.join(dir, 'repo', 'runs', 'prod', f), 'utf8')) as {
        ok: boolean;
        snapshot: string | null;
        details?: { nothing?: string };
      };
      if (r.details?.nothing !== undefined) noOps.push(r);
    }
    expect(noOps.length).toBeGreaterThanOrEqual(2);
    expect(noOps[0]).toMatchObject({ ok: true, snapshot: null });
    // Without the records, every due time after the last real verify looked missed.
    const st = await runCli(['status', '--target', 'prod', '--json'], { cwd: dir, env });
    const kinds = (
      JSON.parse(st.stdout) as { targets: Array<{ findings: Array<{ kind: string }> }> }
    ).targets.flatMap((t) => t.findings.map((f) => f.kind));
    expect(kinds).not.toContain('missed-run');
  });

  it('is critical (an alert, metrics, /healthz) while the repository cannot be read, not its last good evaluation', async () => {
    await writeFile(path.join(dir, 'flashback.yaml'), config(''));
    const serve = startServe(dir, { HOOK_URL: hook.url });
    // The run records' folder unlistable (as root, the tests cannot take a
    // permission away; the evaluation fails the same way): a file in its place.
    const runs = path.join(dir, 'repo', 'runs');
    let moved = false;
    const before = hook.received.length;
    try {
      const address = await until('the service to listen', () => listenAddress(serve));
      await until(
        'a first evaluation',
        () => serve.logs.some((l) => l.msg === 'flashback serve started') || undefined,
      );
      await mkdir(runs, { recursive: true }); // (none yet when this test runs alone)
      await rename(runs, `${runs}.aside`);
      moved = true;
      await writeFile(runs, 'not a folder');
      const alerts = () => hook.received.slice(before).map((r) => r.body.flashback);
      const alert = await until('an alert that the status cannot be read', () =>
        alerts().find((a) => a.target === 'prod' && a.kind === 'status-unreadable'),
      );
      expect(alert.severity).toBe('critical');
      expect(alert.message).toContain('cannot be read from the repository');
      const metrics = await (await fetch(`http://${address}/metrics`)).text();
      expect(metrics).toMatch(/^flashback_status\{target="prod"\} 2$/m);
      const h = (await (await fetch(`http://${address}/healthz`)).json()) as { backups: string };
      expect(h.backups).toBe('critical');
      await rm(runs);
      await rename(`${runs}.aside`, runs);
      moved = false;
      // Readable again: evaluations stop failing (one at most still in flight).
      const failed = () => serve.logs.filter((l) => l.msg === 'status evaluation failed').length;
      const after = failed();
      await new Promise((r) => setTimeout(r, 3000)); // (three evaluations)
      expect(failed()).toBeLessThanOrEqual(after + 1);
    } finally {
      if (moved) {
        await rm(runs);
        await rename(`${runs}.aside`, runs);
      }
      expect(await stop(serve)).toBe(0);
    }
  });

  it('neither backs up into nor reports on an empty place where the repository was (moved, or its volume unmounted)', async () => {
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      config('    schedule:\n      backup: "*/2 * * * * *"\n'),
    );
    const repo = path.join(dir, 'repo');
    const serve = startServe(dir, { HOOK_URL: hook.url });
    const before = hook.received.length;
    let moved = false;
    try {
      await until(
        'a scheduled backup',
        () =>
          serve.logs.some((l) => String(l.msg).startsWith('backup prod: snapshot')) || undefined,
      );
      await rename(repo, `${repo}.moved`);
      moved = true;
      const alert = await until('an alert that the repository is gone', () =>
        hook.received
          .slice(before)
          .map((r) => r.body.flashback)
          .find((a) => a.target === 'prod' && a.kind === 'status-unreadable'),
      );
      expect(alert.message).toContain('is gone');
      await until(
        'a backup refused',
        () =>
          serve.logs.some(
            (l) =>
              String(l.msg).startsWith('backup prod: failed') && String(l.msg).includes('is gone'),
          ) || undefined,
      );
      // Nothing was written where the repository was.
      await expect(readdir(repo)).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      if (moved) await rename(`${repo}.moved`, repo);
      expect(await stop(serve)).toBe(0);
    }
  });

  it('runs at start a job that missed its due time while serve was down, once; not a job that never ran', async () => {
    // A yearly prune that last ran before this year's due time (serve was
    // down on 1 January), and a yearly verify that never ran (a new schedule).
    await new RunStore(new LocalStorage(path.join(dir, 'repo'))).record({
      kind: 'prune',
      target: 'prod',
      snapshot: null,
      ok: true,
      trigger: 'schedule',
      startedAt: '2024-12-31T23:00:00.000Z',
      finishedAt: '2024-12-31T23:00:01.000Z',
      seconds: 1,
    });
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      config('    schedule:\n      prune: "0 0 1 1 *"\n      verify: "0 0 1 1 *"\n'),
    );
    const serve = startServe(dir, { HOOK_URL: hook.url });
    try {
      await until('the missed prune run', () =>
        serve.logs.find((l) => String(l.msg).startsWith('prune prod: ') && l.seconds !== undefined),
      );
      expect(
        serve.logs.filter((l) => String(l.msg).includes('missed while serve was not running')),
      ).toEqual([expect.objectContaining({ job: 'prune', target: 'prod' })]);
      expect(serve.logs.some((l) => String(l.msg).startsWith('verify prod:'))).toBe(false);
    } finally {
      expect(await stop(serve)).toBe(0);
    }
  });

  it('refuses a taken or impossible listen address, an unknown time zone and an unknown status target (exit 3, not 70)', async () => {
    await writeFile(path.join(dir, 'flashback.yaml'), config(''));
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const { port } = busy.address() as AddressInfo;
    try {
      const taken = await runCli(['serve', '--listen', `127.0.0.1:${port}`], {
        cwd: dir,
        env: { ...env, HOOK_URL: hook.url },
      });
      expect(taken.code, taken.stderr).toBe(ExitCode.usage);
      expect(taken.stderr).toContain(`cannot listen on 127.0.0.1:${port}`);
      expect(taken.stderr).toContain('another process listens there');
    } finally {
      await new Promise((r) => busy.close(r));
    }
    const high = await runCli(['serve', '--listen', '127.0.0.1:99999'], {
      cwd: dir,
      env: { ...env, HOOK_URL: hook.url },
    });
    expect(high.code, high.stderr).toBe(ExitCode.usage);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      config('').replace('  check_interval: 1s', '  check_interval: 1s\n  timezone: Mars/Olympus'),
    );
    const tz = await runCli(['serve'], { cwd: dir, env: { ...env, HOOK_URL: hook.url } });
    expect(tz.code, tz.stderr).toBe(ExitCode.usage);
    expect(tz.stderr).toContain('expected an IANA time zone name');
    await writeFile(path.join(dir, 'flashback.yaml'), config(''));
    const typo = await runCli(['status', '--target', 'prdo'], {
      cwd: dir,
      env: { ...env, HOOK_URL: hook.url },
    });
    expect(typo.code, typo.stderr).toBe(ExitCode.usage);
    expect(typo.stderr).toContain('unknown target(s) "prdo"');
  });

  it('refuses a second serve on the same repository (exit 7), and takes over from one that is gone', async () => {
    await writeFile(path.join(dir, 'flashback.yaml'), config(''));
    const first = startServe(dir, { HOOK_URL: hook.url });
    try {
      await until('serve started', () => first.logs.length > 0 || undefined);
      const second = startServe(dir, { HOOK_URL: hook.url });
      expect(await second.exited).toBe(ExitCode.locked);
      expect(second.stderr).toContain(
        `another flashback serve runs on the repository at ${path.join(dir, 'repo')} (pid ${first.child.pid} on `,
      );
    } finally {
      expect(await stop(first)).toBe(0);
    }
    expect(await readdir(path.join(dir, 'repo', 'serve'))).toEqual([]);
    // A serve killed without a chance to remove its lease (SIGKILL): noticed and removed.
    await writeFile(
      path.join(dir, 'repo', 'serve', 'gone.json'),
      JSON.stringify({
        id: 'gone',
        pid: 2 ** 22 + 1,
        hostname: (await import('node:os')).hostname(),
        started: '2026-11-23T00:00:00.000Z',
        refreshed: '2026-11-23T00:00:00.000Z',
      }),
    );
    const third = startServe(dir, { HOOK_URL: hook.url });
    try {
      await until('the stale lease removed', () =>
        third.logs.find((l) =>
          String(l.msg).startsWith('removed the lease of a serve that is gone'),
        ),
      );
    } finally {
      expect(await stop(third)).toBe(0);
    }
  });

  it('alerts a scheduled backup that fails because the repository cannot be written (no record possible)', async () => {
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      config('    schedule:\n      backup: "*/2 * * * * *"\n'),
    );
    const repo = path.join(dir, 'repo');
    const serve = startServe(dir, { HOOK_URL: hook.url });
    const before = hook.received.length;
    let mounted = false;
    try {
      await until('serve started', () => serve.logs.length > 0 || undefined);
      // A real read-only file system (the tests run as root, as CI does).
      await run('mount', ['--bind', repo, repo]);
      mounted = true;
      await run('mount', ['-o', 'remount,ro,bind', repo]);
      const alert = await until('an alert for the failed backup', () =>
        hook.received
          .slice(before)
          .map((r) => r.body.flashback)
          .find((a) => a.target === 'prod' && a.kind === 'backup-failed'),
      );
      // (Made read-only before a backup, or during one.)
      expect(alert.message).toMatch(/cannot write to the repository|read-only file system/);
      expect(
        serve.logs.some((l) => String(l.msg) === 'could not record the run in the repository'),
      ).toBe(true);
      await run('umount', [repo]);
      mounted = false;
      // A lock whose removal failed while read-only is removed once it can be
      // (it stayed, live while serve runs, and locked prune out).
      const end = Date.now() + 15_000;
      while ((await readdir(path.join(repo, 'locks'))).length > 0 && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(await readdir(path.join(repo, 'locks'))).toEqual([]);
    } finally {
      if (mounted) await run('umount', [repo]);
      expect(await stop(serve)).toBe(0);
    }
  });

  it('stops cleanly on SIGTERM in the middle of a backup: nothing committed, lock released', async () => {
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      config('    schedule:\n      backup: "* * * * * *"\n'),
    );
    const snapshotsBefore = (await readdir(path.join(dir, 'repo', 'snapshots'))).length;
    const serve = startServe(dir, {
      HOOK_URL: hook.url,
      FLASHBACK_FAULTPOINT: 'backup.during-data',
    });
    await until('the backup to be mid-way', () =>
      serve.stderr.includes('faultpoint backup.during-data reached'),
    );
    expect(await readdir(path.join(dir, 'repo', 'locks'))).toHaveLength(1);
    // While the backup is held up, the status is still evaluated (the
    // metrics froze for as long as a job ran) and /healthz says alive (it
    // said "stalled", 503, after 10 s of any job).
    const address = await until('the service to listen', () => listenAddress(serve));
    const age = async () =>
      Number(
        /^flashback_backup_age_seconds\{target="prod"\} (\d+)/m.exec(
          await (await fetch(`http://${address}/metrics`)).text(),
        )?.[1],
      );
    const first = await age();
    await new Promise((r) => setTimeout(r, 10_500));
    expect(await age()).toBeGreaterThanOrEqual(first + 9);
    const health = await fetch(`http://${address}/healthz`);
    expect(health.status).toBe(200);
    expect(((await health.json()) as { running: string }).running).toBe('backup prod');
    expect(await stop(serve)).toBe(0);
    expect((await readdir(path.join(dir, 'repo', 'snapshots'))).length).toBe(snapshotsBefore);
    expect(await readdir(path.join(dir, 'repo', 'locks'))).toEqual([]);
    const failed = serve.logs.find((l) => String(l.msg).startsWith('backup prod: failed'));
    expect(String(failed?.msg)).toContain('interrupted');
    // The next backup works.
    await writeFile(path.join(dir, 'flashback.yaml'), config(''));
    expect((await runCli(['backup', 'prod'], { cwd: dir, env })).code).toBe(0);
  });
});
