/** The `flashback` command as users run it: output, JSON, exit codes, and no leaked passwords. */
import { execFile, spawn } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { SnapshotStore } from '../../src/repo/snapshots.js';
import { LocalStorage } from '../../src/storage/local.js';
import { holdPruneLock } from '../harness/lock.js';
import {
  CLI,
  url as dbUrl,
  freshDatabase,
  runCli,
  sql,
  type TestServer,
  tempDir,
  testServers,
} from '../harness/pg.js';

const servers = testServers();
const pg15 = servers.find((s) => s.major === 15)!;
const pg17 = servers.find((s) => s.major === 17)!;

function targetYaml(name: string, s: TestServer, db: string, extra = ''): string {
  return `  ${name}:\n    host: ${s.host}\n    port: ${s.port}\n    database: ${db}\n    user: ${s.user}\n    password_env: PW_${s.major}\n${extra}`;
}
const env = { PW_15: pg15.password, PW_17: pg17.password };

describe('flashback targets, init and accept', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let shop: string;
  let ledger: string;

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    shop = await freshDatabase(pg17, 'shop');
    ledger = await freshDatabase(pg15, 'ledger');
    await sql(pg17, shop, 'CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)');
  });
  afterAll(async () => cleanup());

  it('init writes a commented config and a repository, and refuses to overwrite', async () => {
    const r = await runCli(['init'], { cwd: dir });
    expect(r.code).toBe(ExitCode.ok);
    expect(r.stdout).toContain(`wrote ${path.join(dir, 'flashback.yaml')}`);
    expect(r.stdout).toMatch(/created repository .*flashback-repo \(id [0-9a-f-]{36}\)/);
    const text = await readFile(path.join(dir, 'flashback.yaml'), 'utf8');
    expect(text).toContain('# Named databases.');
    // Run again: the file is kept, and the repository it names is only opened.
    const again = await runCli(['init'], { cwd: dir });
    expect(again.code).toBe(ExitCode.ok);
    expect(again.stdout).toContain(`kept ${path.join(dir, 'flashback.yaml')}`);
    expect(again.stdout).toMatch(/using existing repository .*flashback-repo/);
    expect(await readFile(path.join(dir, 'flashback.yaml'), 'utf8')).toBe(text);
  });

  it('init refuses a directory holding files of its own, exit 6, and leaves it as it was', async () => {
    const own = await tempDir();
    try {
      const other = path.join(own.dir, 'other-backups');
      await mkdir(path.join(other, '.cache'), { recursive: true });
      await writeFile(path.join(other, '.cache', 'state'), 'x');
      const r = await runCli(['init', '--repo', other], { cwd: own.dir });
      expect(r.code).toBe(ExitCode.repository);
      expect(r.stderr).toContain(`${other} is not empty and is not a Flashback repository`);
      expect(await readdir(other)).toEqual(['.cache']);
      // The starter configuration is not written either.
      expect(await readdir(own.dir)).toEqual(['other-backups']);
    } finally {
      await own.cleanup();
    }
  });

  it('init beside a configuration written by hand creates the repository it names and keeps the file', async () => {
    const own = await tempDir();
    try {
      const yaml = 'version: 1\nrepository: ./backups/repo\ntargets: {}\n';
      await writeFile(path.join(own.dir, 'flashback.yaml'), yaml);
      const before = await runCli(['list'], { cwd: own.dir });
      expect(before.code).toBe(ExitCode.repository);
      expect(before.stderr).toContain('create one with `flashback init`');
      const r = await runCli(['init', '--json'], { cwd: own.dir });
      expect(r.code).toBe(ExitCode.ok);
      expect(JSON.parse(r.stdout)).toMatchObject({
        configWritten: false,
        repository: path.join(own.dir, 'backups/repo'),
        created: true,
      });
      expect(await readFile(path.join(own.dir, 'flashback.yaml'), 'utf8')).toBe(yaml);
      expect((await runCli(['list'], { cwd: own.dir })).code).toBe(ExitCode.ok);
      // A file naming no repository: told so, and nothing written.
      await writeFile(path.join(own.dir, 'flashback.yaml'), 'version: 1\n');
      const none = await runCli(['init'], { cwd: own.dir });
      expect(none.code).toBe(ExitCode.usage);
      expect(none.stderr).toContain('names no repository');
      expect(await readFile(path.join(own.dir, 'flashback.yaml'), 'utf8')).toBe('version: 1\n');
    } finally {
      await own.cleanup();
    }
  });

  it('describes each target: address, version, size, system id, last write, identity', async () => {
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: ./flashback-repo\ntargets:\n${targetYaml('prod', pg17, shop, '    description: the shop\n')}${targetYaml('ledger', pg15, ledger, '    protected: false\n')}`,
    );
    const r = await runCli(['targets'], { cwd: dir, env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(ExitCode.ok);
    expect(r.stdout).toContain('prod  (protected)  the shop');
    expect(r.stdout).toContain(`address     postgres@127.0.0.1:${pg17.port}/${shop}`);
    expect(r.stdout).toMatch(/server {6}PostgreSQL 17\.\d+, primary, [\d.]+ MB/);
    expect(r.stdout).toMatch(
      /last write {2}\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ, \d+ s ago \(commit timestamps\)/,
    );
    expect(r.stdout).toContain('identity    fingerprint recorded now (first contact)');
    expect(r.stdout).toContain('ledger  (unprotected)');

    const j = await runCli(['targets', '--json'], { cwd: dir, env });
    expect(j.code).toBe(0);
    const reports = JSON.parse(j.stdout) as Array<Record<string, unknown>>;
    const prod = reports.find((x) => x.name === 'prod')!;
    const [row] = await sql(
      pg17,
      shop,
      'SELECT system_identifier::text AS sid, pg_database_size(current_database())::text AS size FROM pg_control_system()',
    );
    expect(prod).toMatchObject({
      kind: 'config',
      protected: true,
      reachable: true,
      host: '127.0.0.1',
      port: pg17.port,
      database: shop,
      standby: false,
      systemIdentifier: row?.sid,
      sizeBytes: Number(row?.size),
      identity: { status: 'match', changes: [], sameAs: [] },
    });
    expect(String(prod.serverVersion)).toMatch(/^17\./);
    expect((prod.lastWrite as { source: string }).source).toBe('commit-timestamp');
    expect(reports.find((x) => x.name === 'ledger')).toMatchObject({
      protected: false,
      systemIdentifier: expect.any(String),
    });
  });

  it('refuses a write to a target whose identity changed until it is accepted through the guard', async () => {
    // Point "ledger" at another server: its fingerprint no longer matches.
    const moved = await freshDatabase(pg17, 'ledger');
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: ./flashback-repo\ntargets:\n${targetYaml('prod', pg17, shop)}${targetYaml('ledger', pg17, moved)}`,
    );
    const listed = await runCli(['targets', 'ledger'], { cwd: dir, env });
    expect(listed.stdout).toContain('identity    CHANGED since');
    expect(listed.code).toBe(ExitCode.critical);
    const doc = await runCli(['doctor', 'ledger'], { cwd: dir, env });
    expect(doc.code).toBe(ExitCode.critical);
    expect(doc.stdout).toMatch(/CRITICAL\s+identity\s+target "ledger" is not the database it was/);

    const noTty = await runCli(['targets', 'accept', 'ledger'], { cwd: dir, env });
    expect(noTty.code).toBe(ExitCode.refused);
    expect(noTty.stderr).toContain('systemIdentifier: recorded');
    expect(noTty.stderr).toContain(
      'refusing to write to protected target "ledger" without confirmation',
    );
    const wrong = await runCli(['targets', 'accept', 'ledger', '--confirm', 'prod'], {
      cwd: dir,
      env,
    });
    expect(wrong.code).toBe(ExitCode.refused);
    expect(wrong.stderr).toContain('confirmation "prod" does not match the target name "ledger"');
    const right = await runCli(['targets', 'accept', 'ledger', '--confirm', 'ledger'], {
      cwd: dir,
      env,
    });
    expect(right.code).toBe(ExitCode.ok);
    expect(right.stdout).toContain(`accepted: target "ledger" is now recorded as system`);
    const after = await runCli(['targets', 'ledger', '--json'], { cwd: dir, env });
    expect(JSON.parse(after.stdout)[0].identity.status).toBe('match');
    expect(after.code).toBe(ExitCode.ok);
  });

  it('says when a changed target now is the same database as another (incident 5)', async () => {
    // "prod2" is recorded on its own database, then repointed at prod's database.
    const own = await freshDatabase(pg17, 'own');
    const write = (db: string) =>
      writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: ./flashback-repo\ntargets:\n${targetYaml('prod', pg17, shop)}${targetYaml('prod2', pg17, db)}`,
      );
    await write(own);
    expect((await runCli(['targets', 'prod2'], { cwd: dir, env })).code).toBe(0);
    await write(shop);
    const r = await runCli(['doctor', 'prod2'], { cwd: dir, env });
    expect(r.code).toBe(ExitCode.critical);
    expect(r.stdout).toContain(
      `database was ${own}, now ${shop}; it is now the same database as target "prod"`,
    );
  });

  it('flags a second name for the same database, and accepts it when deliberate', async () => {
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: ./flashback-repo\ntargets:\n${targetYaml('prod', pg17, shop)}  staging:\n    url: postgres://postgres@127.0.0.1:${pg17.port}/${shop}\n    password_env: PW_17\n    protected: false\n`,
    );
    const r = await runCli(['targets', 'staging'], { cwd: dir, env });
    expect(r.stdout).toContain('identity    SAME DATABASE AS "prod"');
    expect(r.code).toBe(ExitCode.critical);
    const doc = await runCli(['doctor', 'staging', '--json'], { cwd: dir, env });
    expect(doc.code).toBe(ExitCode.critical);
    const finding = JSON.parse(doc.stdout)[0].findings.find(
      (f: { check: string }) => f.check === 'identity',
    );
    expect(finding).toMatchObject({ severity: 'critical' });
    expect(finding.summary).toContain('target "staging" is the same database as target "prod"');
    // Unprotected, it would be a way into prod's database without a
    // confirmation: refused, and nothing is recorded.
    const unprotected = await runCli(['targets', 'accept', 'staging'], { cwd: dir, env });
    expect(unprotected.code).toBe(ExitCode.refused);
    expect(unprotected.stderr).toContain(
      'target "staging" is unprotected and its database is that of protected target "prod"',
    );
    expect((await runCli(['doctor', 'staging', '--json'], { cwd: dir, env })).code).toBe(
      ExitCode.critical,
    );
    // Marked protected, it is accepted when confirmed, and then guarded like prod.
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: ./flashback-repo
targets:
${targetYaml('prod', pg17, shop)}  staging:
    url: postgres://postgres@127.0.0.1:${pg17.port}/${shop}
    password_env: PW_17
`,
    );
    const acc = await runCli(['targets', 'accept', 'staging', '--confirm', 'staging'], {
      cwd: dir,
      env,
    });
    expect(acc.code, acc.stderr).toBe(0);
    expect(acc.stdout).toContain('shares its database with prod');
    const after = await runCli(['doctor', 'staging', '--json'], { cwd: dir, env });
    expect(JSON.parse(after.stdout)[0].findings[0]).toMatchObject({
      check: 'identity',
      severity: 'ok',
    });
    // Made unprotected after it was accepted: the acceptance no longer holds,
    // or writes to prod's database would go through it without a confirmation.
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: ./flashback-repo
targets:
${targetYaml('prod', pg17, shop)}  staging:
    url: postgres://postgres@127.0.0.1:${pg17.port}/${shop}
    password_env: PW_17
    protected: false
`,
    );
    const reopened = await runCli(['doctor', 'staging', '--json'], { cwd: dir, env });
    expect(reopened.code).toBe(ExitCode.critical);
    expect(
      JSON.parse(reopened.stdout)[0].findings.find(
        (f: { check: string }) => f.check === 'identity',
      ),
    ).toMatchObject({
      severity: 'critical',
      summary: expect.stringContaining('target "staging" is the same database as target "prod"'),
    });
    const again = await runCli(['targets', 'accept', 'staging'], { cwd: dir, env });
    expect(again.code).toBe(ExitCode.refused);
    expect(again.stderr).toContain('is unprotected and its database is that of protected target');
  });
});

describe('second names for one database', () => {
  it('keeps an accepted share of two unprotected names only while the other stays unprotected', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const db = await freshDatabase(pg17, 'shared');
      const write = (firstProtected: boolean) =>
        writeFile(
          path.join(dir, 'flashback.yaml'),
          `repository: ./flashback-repo\ntargets:\n${targetYaml('ci1', pg17, db, firstProtected ? '' : '    protected: false\n')}${targetYaml('ci2', pg17, db, '    protected: false\n')}`,
        );
      expect(
        (await runCli(['init', '--repo', 'flashback-repo', '--force'], { cwd: dir })).code,
      ).toBe(0);
      await write(false);
      expect((await runCli(['targets', 'ci1'], { cwd: dir, env })).code).toBe(0);
      const acc = await runCli(['targets', 'accept', 'ci2'], { cwd: dir, env });
      expect(acc.code, acc.stderr).toBe(0);
      const identity = async () =>
        JSON.parse(
          (await runCli(['doctor', 'ci2', '--json'], { cwd: dir, env })).stdout,
        )[0].findings.find((f: { check: string }) => f.check === 'identity');
      expect(await identity()).toMatchObject({ severity: 'ok' });
      // ci1 protected since: ci2 would be an unprotected way into its database.
      await write(true);
      expect(await identity()).toMatchObject({
        severity: 'critical',
        summary: expect.stringContaining('target "ci2" is the same database as target "ci1"'),
      });
    } finally {
      await cleanup();
    }
  });
});

describe('errors and exit codes', () => {
  it('refuses a history window that starts in the future, and an impossible zone offset (exit 3)', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const future = await runCli(['history', 'items', '1', '--since', '2099-01-01'], { cwd: dir });
      expect(future.code).toBe(ExitCode.usage);
      expect(future.stderr).toContain('--since 2099-01-01T00:00:00.000000Z is in the future');
      const offset = await runCli(
        ['history', 'items', '1', '--since', '2026-11-21T10:00:00+99:00'],
        { cwd: dir },
      );
      expect(offset.code).toBe(ExitCode.usage);
      expect(offset.stderr).toContain('--since: not a time: "2026-11-21T10:00:00+99:00"');
    } finally {
      await cleanup();
    }
  });

  it('status with nothing to report on is exit 3, in JSON too (not an empty report with exit 0)', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      expect((await runCli(['init'], { cwd: dir })).code).toBe(ExitCode.ok);
      const text = await runCli(['status'], { cwd: dir });
      expect(text.code).toBe(ExitCode.usage);
      const json = await runCli(['status', '--json'], { cwd: dir });
      expect(json.code).toBe(ExitCode.usage);
      expect(JSON.parse(json.stdout).error.message).toContain('no targets to report on');
    } finally {
      await cleanup();
    }
  });

  it('unlock exits 7 while it keeps a lock of a running process, 0 once none is left', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const repo = path.join(dir, 'repo');
      expect((await runCli(['init', '--repo', repo], { cwd: dir })).code).toBe(ExitCode.ok);
      const release = await holdPruneLock(repo);
      const kept = await runCli(['unlock', '--repo', repo], { cwd: dir });
      expect(kept.code).toBe(ExitCode.locked);
      expect(kept.stdout).toContain('kept lock of "prune"');
      expect(kept.stdout).toContain('its process is running');
      await release();
      const none = await runCli(['unlock', '--repo', repo], { cwd: dir });
      expect(none.code).toBe(ExitCode.ok);
      expect(none.stdout).toBe('no locks\n');
    } finally {
      await cleanup();
    }
  });

  it('names the target and host of an unreachable server, exit 5, and never prints the password', async () => {
    const { dir, cleanup } = await tempDir();
    const secret = 'Sup3r-S3cret-PW';
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      'targets:\n  gone:\n    host: 127.0.0.1\n    port: 1\n    database: shop\n    password_env: GONE_PW\n    protected: false\n',
    );
    const listed = await runCli(['targets', '--json'], { cwd: dir, env: { GONE_PW: secret } });
    expect(JSON.parse(listed.stdout)[0]).toMatchObject({
      name: 'gone',
      reachable: false,
      protected: false,
      port: 1,
    });
    for (const args of [
      ['targets'],
      ['doctor', 'gone'],
      ['doctor', 'gone', '--debug'],
      [`postgres://app:${secret}@127.0.0.1:1/shop`].flatMap((u) => ['doctor', u, '--debug']),
    ]) {
      const r = await runCli(args, { cwd: dir, env: { GONE_PW: secret } });
      expect(r.code).toBe(ExitCode.unreachable);
      const all = r.stdout + r.stderr;
      expect(all).toMatch(/cannot connect to .*127\.0\.0\.1:1\/shop.*connection refused/);
      expect(all).not.toContain(secret);
    }
    await cleanup();
  });

  it('records a backup that cannot start (password variable unset) as failed: status shows it', async () => {
    const { dir, cleanup } = await tempDir();
    expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      'repository: repo\ntargets:\n  nopw:\n    host: 127.0.0.1\n    port: 1\n    database: shop\n    password_env: NOPW_PW\n',
    );
    const r = await runCli(['backup', 'nopw'], { cwd: dir });
    expect(r.code).toBe(ExitCode.usage);
    expect(r.stderr).toContain('environment variable NOPW_PW is not set');
    const s = await runCli(['status', '--target', 'nopw', '--repository-only', '--json'], {
      cwd: dir,
    });
    const findings = (
      JSON.parse(s.stdout) as {
        targets: Array<{ findings: Array<{ kind: string; message: string }> }>;
      }
    ).targets[0]!.findings;
    expect(findings.find((f) => f.kind === 'backup-failed')?.message).toContain(
      'environment variable NOPW_PW is not set',
    );
    // A snapshot from the log reads no source: it needs no password.
    const fromLog = await runCli(['backup', 'nopw', '--from-log'], { cwd: dir });
    expect(fromLog.stderr).not.toContain('NOPW_PW');
    expect(fromLog.stderr).toContain('change log');
    await cleanup();
  });

  it('reports a wrong password as an authentication failure without printing either password', async () => {
    const wrong = 'Wr0ng-Pa55word';
    const u = `postgres://postgres:${wrong}@127.0.0.1:${pg17.port}/postgres`;
    for (const debug of [[], ['--debug']]) {
      const r = await runCli(['doctor', u, ...debug]);
      expect(r.code).toBe(ExitCode.unreachable);
      const all = r.stdout + r.stderr;
      expect(all).toContain('password authentication failed for user "postgres"');
      expect(all).toContain(`target "postgres://postgres@127.0.0.1:${pg17.port}/postgres"`);
      expect(r.stdout + r.stderr).not.toContain(wrong);
      expect(r.stdout + r.stderr).not.toContain(pg17.password);
    }
  });

  it('rejects a bad config file with exit 3, the key path, and no stack trace unless --debug', async () => {
    const { dir, cleanup } = await tempDir();
    await writeFile(path.join(dir, 'flashback.yaml'), 'targets:\n  prod:\n    databse: shop\n');
    const r = await runCli(['targets'], { cwd: dir });
    expect(r.code).toBe(ExitCode.usage);
    expect(r.stderr).toContain(
      'flashback.yaml:3:5: targets.prod.databse: unknown key "databse" (did you mean database?)',
    );
    expect(r.stderr).not.toContain('    at ');
    const d = await runCli(['targets', '--debug'], { cwd: dir });
    expect(d.stderr).toContain('    at ');
    const j = await runCli(['targets', '--json'], { cwd: dir });
    expect(JSON.parse(j.stdout).error).toMatchObject({ code: 'config.invalid', exitCode: 3 });
    const viaEnv = await runCli(['targets'], {
      env: { FLASHBACK_CONFIG: path.join(dir, 'missing.yaml') },
    });
    expect(viaEnv.code).toBe(ExitCode.usage);
    expect(viaEnv.stderr).toContain('missing.yaml: file not found');
    await cleanup();
  });

  it('rejects unknown commands, options and targets with exit 3 (in JSON too with --json)', async () => {
    expect((await runCli(['frobnicate'])).code).toBe(ExitCode.usage);
    expect((await runCli(['targets', '--frob'])).code).toBe(ExitCode.usage);
    const t = await runCli(['doctor', 'nosuch']);
    expect(t.code).toBe(ExitCode.usage);
    expect(t.stderr).toContain('unknown target "nosuch"');
    // With --json, a usage error is a JSON object on stdout too.
    const j = await runCli(['list', '--json', '--frob']);
    expect(j.code).toBe(ExitCode.usage);
    expect(JSON.parse(j.stdout)).toEqual({
      error: {
        code: 'usage',
        message: "unknown option '--frob'",
        hint: 'run with --help for usage',
        exitCode: ExitCode.usage,
      },
    });
    const v = await runCli(['--version']);
    expect(v.code).toBe(0);
    const pkg = JSON.parse(
      await readFile(new URL('../../package.json', import.meta.url), 'utf8'),
    ) as { version: string };
    expect(v.stdout.trim()).toBe(pkg.version);
  });

  // SIGHUP: a closed terminal or a dropped SSH session stops a command as SIGTERM does.
  it.each(['SIGINT', 'SIGHUP'] as const)('stops on %s with exit 130', async (signal) => {
    // A server that accepts connections and never answers keeps the CLI waiting.
    const hang = net.createServer(() => {});
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', () => r()));
    const port = (hang.address() as net.AddressInfo).port;
    const child = spawn(process.execPath, [CLI, 'doctor', `postgres://x@127.0.0.1:${port}/db`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    await new Promise((r) => setTimeout(r, 700));
    child.kill(signal);
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    hang.close();
    expect(code).toBe(ExitCode.interrupted);
    expect(stderr).toContain(`interrupted by ${signal}`);
  });

  it('keeps fingerprints in the repository named by --repo or FLASHBACK_REPO', async () => {
    const { dir, cleanup } = await tempDir();
    const r1 = await runCli(['init', '--repo', path.join(dir, 'r1')], { cwd: dir });
    expect(r1.code).toBe(0);
    await runCli(['init', '--force', '--repo', path.join(dir, 'r2')], { cwd: dir });
    const yaml = `targets:\n${targetYaml('db15', pg15, 'postgres')}`;
    await writeFile(path.join(dir, 'flashback.yaml'), yaml);
    expect((await runCli(['targets', '--repo', 'r1'], { cwd: dir, env })).code).toBe(0);
    expect(
      (
        await runCli(['targets'], {
          cwd: dir,
          env: { ...env, FLASHBACK_REPO: path.join(dir, 'r2') },
        })
      ).code,
    ).toBe(0);
    for (const r of ['r1', 'r2']) {
      const rec = JSON.parse(await readFile(path.join(dir, r, 'targets', 'db15.json'), 'utf8'));
      expect(rec).toMatchObject({ target: 'db15', database: 'postgres', port: pg15.port });
    }
    // Without any repository, targets still works and says fingerprints are not checked.
    const none = await runCli(['targets'], { cwd: dir, env });
    expect(none.stdout).toContain(
      'note: identity fingerprints not checked: no repository configured',
    );
    const missing = await runCli(['targets', 'accept', 'db15', '--repo', path.join(dir, 'nope')], {
      cwd: dir,
      env,
    });
    expect(missing.code).toBe(ExitCode.repository);
    expect(missing.stderr).toContain(`no Flashback repository at ${path.join(dir, 'nope')}`);
    await cleanup();
  });

  it('uses DATABASE_URL or PG* variables for a one-off target', async () => {
    const viaUrl = await runCli(['targets', '--json'], {
      env: {
        DATABASE_URL: `postgres://postgres@127.0.0.1:${pg15.port}/postgres`,
        PGPASSWORD: pg15.password,
      },
    });
    expect(viaUrl.code).toBe(0);
    expect(JSON.parse(viaUrl.stdout)[0]).toMatchObject({
      kind: 'env',
      protected: true,
      port: pg15.port,
    });
    const viaPg = await runCli(['doctor', '--json'], {
      env: {
        PGHOST: '127.0.0.1',
        PGPORT: String(pg15.port),
        PGUSER: 'postgres',
        PGDATABASE: 'postgres',
        PGPASSWORD: pg15.password,
      },
    });
    expect(JSON.parse(viaPg.stdout)[0].serverVersion).toMatch(/^15\./);
  });
});

describe("a server's refusal", () => {
  it('is a failure naming what to grant (exit 1), not an internal error, in the output and in status', async () => {
    const { dir, cleanup } = await tempDir();
    const db = await freshDatabase(pg15, 'refuse');
    const role = `lim_${Math.random().toString(16).slice(2, 8)}`;
    try {
      await sql(
        pg15,
        db,
        `CREATE SCHEMA priv; CREATE TABLE priv.t (id int PRIMARY KEY); INSERT INTO priv.t VALUES (1);
         CREATE ROLE ${role} LOGIN REPLICATION PASSWORD 'pw-lim'; GRANT SELECT ON priv.t TO ${role}`,
      );
      expect((await runCli(['init', '--repo', 'repo'], { cwd: dir })).code).toBe(ExitCode.ok);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: repo\ntargets:\n  lim:\n    host: ${pg15.host}\n    port: ${pg15.port}\n    database: ${db}\n    user: ${role}\n    password_env: PW_LIM\n    protected: false\n`,
      );
      const env = { PW_LIM: 'pw-lim' };
      // SELECT on the table, no USAGE on its schema.
      const b = await runCli(['backup', 'lim'], { cwd: dir, env });
      expect(b.code, b.stderr).toBe(ExitCode.failed);
      expect(b.stderr).toContain('permission denied for schema priv');
      expect(b.stderr).toContain('hint: grant the role Flashback connects as that privilege');
      expect(b.stderr).not.toContain('internal error');
      const st = await runCli(['status', '--target', 'lim', '--json'], { cwd: dir, env });
      expect(st.stdout).toContain('permission denied for schema priv');
      expect(st.stdout).not.toContain('"internal"');
      // Granted, the backup works; a restore --create by a role without CREATEDB is refused.
      await sql(pg15, db, `GRANT USAGE ON SCHEMA priv TO ${role}`);
      const ok = await runCli(['backup', 'lim', '--json'], { cwd: dir, env });
      expect(ok.code, ok.stderr).toBe(ExitCode.ok);
      const into = `${db}_copy`;
      const r = await runCli(
        [
          'restore',
          JSON.parse(ok.stdout).snapshot,
          '--to',
          `postgres://${role}@${pg15.host}:${pg15.port}/${into}`,
          '--create',
          '--confirm',
          into,
        ],
        { cwd: dir, env: { PGPASSWORD: 'pw-lim' } },
      );
      expect(r.code, r.stderr).toBe(ExitCode.failed);
      expect(r.stderr).toContain('permission denied to create database');
      expect(r.stderr).toContain('CREATEDB');
      // A snapshot of a database whose locale the target server lacks.
      const store = new SnapshotStore(new LocalStorage(path.join(dir, 'repo')));
      const m = await store.read(JSON.parse(ok.stdout).snapshot);
      const foreign = { ...m, id: `${m.id.slice(0, -4)}ffff`, collate: 'xx_XX.nowhere' };
      await store.commit(foreign);
      const l = await runCli(
        ['restore', foreign.id, '--to', dbUrl(pg15, into), '--create', '--confirm', into],
        { cwd: dir },
      );
      expect(l.code, l.stderr).toBe(ExitCode.failed);
      expect(l.stderr).toContain(`creating database "${into}" failed: invalid locale name`);
      expect(l.stderr).toContain('LC_COLLATE xx_XX.nowhere');
      expect(l.stderr).toContain('install that locale');
    } finally {
      await sql(pg15, 'postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      await sql(pg15, 'postgres', `DROP ROLE IF EXISTS ${role}`);
      await cleanup();
    }
  });
});

describe('library', () => {
  it('is importable as "flashback" with its typed API', async () => {
    const root = new URL('../..', import.meta.url);
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "import * as f from 'flashback'; console.log(JSON.stringify([typeof f.guard, typeof f.loadConfig, f.ExitCode.refused]))",
      ],
      { cwd: root },
    );
    expect(JSON.parse(stdout)).toEqual(['function', 'function', 4]);
    const types = await readFile(new URL('../../dist/index.d.ts', import.meta.url), 'utf8');
    expect(types).toContain('guard');
  });
});

describe('bad flags of the capture, point-in-time and undo commands', () => {
  it('are refused with exit 3, naming the flag, before anything connects', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      expect((await runCli(['init', '--repo', path.join(dir, 'repo')], { cwd: dir })).code).toBe(0);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: repo\ntargets:\n${targetYaml('prod', pg17, 'postgres')}`,
      );
      const cases: Array<[string[], RegExp]> = [
        [['restore', 'prod', '--lsn', 'zero', '--to', 'prod'], /--lsn: not a WAL position/],
        [['restore', 'prod', '--at', 'yesterday-ish', '--to', 'prod'], /--at: not a time/],
        [
          ['restore', 'prod', '--before-xid', '-4', '--to', 'prod'],
          /--before-xid: expected a transaction id/,
        ],
        // (Not taken for 8427: another transaction than the one meant.)
        [
          ['restore', 'prod', '--before-xid', '0x20EB', '--to', 'prod'],
          /--before-xid: expected a transaction id \(decimal digits/,
        ],
        [['undo', 'prod', '--tx', '8427.0'], /--tx: expected a transaction id \(decimal digits/],
        [
          ['restore', 'prod', '--at', 'now', '--lsn', '0/1', '--to', 'prod'],
          /give one of --at, --lsn, --before-xid/,
        ],
        [['backup', 'prod', '--lsn', '0/1'], /--lsn goes with --from-log/],
        [['backup', 'prod', '--from-log', '--lsn', 'x'], /--lsn: not a WAL position/],
        [['capture', 'prod', '--flush-interval', 'soon'], /--flush-interval: expected a duration/],
        [
          ['undo', 'prod', '--tx', '7', '--since', 'now-1h'],
          /give --tx or --since\/--until, not both/,
        ],
        [['undo', 'prod', '--since', 'now-1h', '--order', '1,2'], /go with --by COLUMN/],
        [['undo', 'prod', '--since', 'now', '--until', 'now-1h'], /--until must be after --since/],
      ];
      for (const [args, message] of cases) {
        const r = await runCli(args, { cwd: dir, env });
        expect(r.code, args.join(' ')).toBe(ExitCode.usage);
        expect(r.stderr, args.join(' ')).toMatch(message);
      }
    } finally {
      await cleanup();
    }
  });
});

describe('output read by a program that stops early (`| head`)', () => {
  it('stops with exit 141, as on SIGPIPE, and no stack trace', async () => {
    // The reader is gone before the first write: Node ignores SIGPIPE, and
    // without a listener the EPIPE was an uncaught error (a stack, exit 1).
    const child = spawn(process.execPath, [CLI, '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(ExitCode.outputClosed);
    expect(stderr).not.toContain('EPIPE');
    expect(stderr).not.toContain('    at ');
  });
});

describe('a bug in a running flashback process', () => {
  it('is reported as an internal error with exit 70 (an unhandled rejection), not as a raw crash', async () => {
    // The process as bin.js runs it, with a promise rejected that nothing
    // handles: Node's default would print a stack trace and exit 1.
    const main = new URL('../../dist/cli/main.js', import.meta.url).href;
    const script = `
      const { runAsProcess } = await import(${JSON.stringify(main)});
      process.argv = [process.argv[0], 'flashback', '--version'];
      runAsProcess();
      Promise.reject(new TypeError('row is undefined'));
    `;
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>(
      (resolve) => {
        execFile(
          process.execPath,
          ['--input-type=module', '-e', script],
          { timeout: 30_000 },
          (err, stdout, stderr) => {
            resolve({
              code: err === null ? 0 : ((err as { code?: number }).code ?? null),
              stdout,
              stderr,
            });
          },
        );
      },
    );
    expect(r.code).toBe(ExitCode.internal);
    expect(r.stderr).toContain('flashback: internal error: row is undefined');
    expect(r.stderr).toContain('This is a bug in Flashback');
    expect(r.stderr).not.toContain('    at '); // the stack only with --debug
  });
});
