/** doctor against real servers: each finding, its severity, what it lists, and the exit code. */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { EmbeddedServer } from '../../src/pg/embedded.js';
import {
  freshDatabase,
  runCli,
  sql,
  type TestServer,
  tempDir,
  testServers,
} from '../harness/pg.js';

interface Finding {
  check: string;
  severity: string;
  summary: string;
  details?: string[];
  fix?: string;
}

function byCheck(stdout: string): Record<string, Finding> {
  const [report] = JSON.parse(stdout) as Array<{ findings: Finding[] }>;
  return Object.fromEntries(report!.findings.map((f) => [f.check, f]));
}

describe.each(testServers().map((s) => [s.major, s] as const))(
  'doctor on PostgreSQL %i',
  (_major, server: TestServer) => {
    let db: string;
    const role = `limited_${randomBytes(3).toString('hex')}`;
    const rolePw = `pw-${randomBytes(6).toString('hex')}`;
    const asSuper = (database: string) =>
      `postgres://postgres@${server.host}:${server.port}/${database}`;
    const env = { PGPASSWORD: server.password };

    beforeAll(async () => {
      db = await freshDatabase(server, 'doctor');
      await sql(
        server,
        db,
        `CREATE TABLE ok_t (id int PRIMARY KEY);
       CREATE TABLE nopk (a int);
       CREATE TABLE deferred_pk (id int PRIMARY KEY DEFERRABLE);
       CREATE TABLE "Mixed Case" (a int);
       CREATE TABLE full_t (a int); ALTER TABLE full_t REPLICA IDENTITY FULL;
       CREATE TABLE ri_t (a int NOT NULL); CREATE UNIQUE INDEX ri_t_a ON ri_t (a); ALTER TABLE ri_t REPLICA IDENTITY USING INDEX ri_t_a;
       CREATE TABLE ri_code (id int PRIMARY KEY, code text NOT NULL); CREATE UNIQUE INDEX ri_code_c ON ri_code (code);
       ALTER TABLE ri_code REPLICA IDENTITY USING INDEX ri_code_c;
       CREATE TABLE ri_none (id int PRIMARY KEY); ALTER TABLE ri_none REPLICA IDENTITY NOTHING;
       CREATE TABLE parted (id int PRIMARY KEY) PARTITION BY RANGE (id);
       CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
       CREATE UNLOGGED TABLE scratch_u (id int PRIMARY KEY);
       CREATE SEQUENCE seq_s;
       SELECT lo_from_bytea(0, '\\x00ff');
       CREATE ROLE ${role} LOGIN PASSWORD '${rolePw}';
       GRANT SELECT ON ok_t TO ${role};
       CREATE SCHEMA priv; CREATE TABLE priv.t (id int PRIMARY KEY); GRANT SELECT ON priv.t TO ${role};
       CREATE TABLE sec (id int PRIMARY KEY); ALTER TABLE sec ENABLE ROW LEVEL SECURITY;
       GRANT SELECT ON sec TO ${role};`,
      );
    });
    afterAll(async () => {
      await sql(server, 'postgres', `DROP DATABASE ${db} WITH (FORCE)`);
      await sql(server, 'postgres', `DROP ROLE ${role}`);
    });

    it('lists tables without a key, unlogged tables and large objects as warnings (exit 1)', async () => {
      const r = await runCli(['doctor', asSuper(db), '--json'], { env });
      expect(r.code).toBe(ExitCode.failed);
      const f = byCheck(r.stdout);
      expect(f['wal-level']?.severity).toBe('ok');
      expect(f['replication-privilege']?.severity).toBe('ok');
      expect(f['replication-connection']?.severity).toBe('ok');
      expect(f['select-privilege']?.severity).toBe('ok');
      expect(f['replica-identity']).toMatchObject({ severity: 'warning' });
      // (full_t has REPLICA IDENTITY FULL, the fix offered last: not listed.)
      expect(f['replica-identity']?.details).toEqual([
        'public."Mixed Case"',
        'public.deferred_pk', // a DEFERRABLE primary key is no replica identity
        'public.nopk',
      ]);
      expect(f['unlogged-tables']).toMatchObject({
        severity: 'warning',
        details: ['public.scratch_u'],
      });
      expect(f['large-objects']?.severity).toBe('warning');
      expect(f['large-objects']?.summary).toMatch(/^1 large object.*does not back them up/);
      expect(f['row-security']?.severity).toBe('ok'); // (a superuser bypasses it)
      // A primary key, and another replica identity: a restore to a moment refuses the table.
      expect(f['identity-key']).toMatchObject({
        severity: 'warning',
        details: [
          'public.ri_code (replica identity index)',
          'public.ri_none (REPLICA IDENTITY NOTHING)',
        ],
      });
      expect(f['replica-identity']?.fix).toContain('ADD PRIMARY KEY');
      // The human form says the same, with the fix.
      const h = await runCli(['doctor', asSuper(db)], { env });
      expect(h.stdout).toMatch(/WARNING\s+replica-identity\s+3 table\(s\)/);
      expect(h.stdout).toContain('public.nopk');
      expect(h.stdout).toContain('fix: ALTER TABLE <t> SET LOGGED');
      expect(h.stdout).toContain('summary: 0 critical, 4 warning');
    });

    it('is ok once its last fix, REPLICA IDENTITY FULL, is applied to every table without a key', async () => {
      const own = await freshDatabase(server, 'doctor_full');
      try {
        await sql(server, own, 'CREATE TABLE k (a int); ALTER TABLE k REPLICA IDENTITY FULL');
        const r = await runCli(['doctor', asSuper(own), '--json'], { env });
        expect(byCheck(r.stdout)['replica-identity']).toMatchObject({
          severity: 'ok',
          details: ['public.k'],
        });
      } finally {
        await sql(server, 'postgres', `DROP DATABASE ${own}`);
      }
    });

    it('is critical when the publication exists: the server refuses UPDATE and DELETE on tables without an identity', async () => {
      await sql(server, db, 'CREATE PUBLICATION flashback FOR ALL TABLES');
      try {
        for (const t of ['nopk', 'deferred_pk']) {
          await expect(sql(server, db, `DELETE FROM ${t}`)).rejects.toThrow(
            /does not have a replica identity/,
          );
        }
        const r = await runCli(['doctor', asSuper(db), '--json'], { env });
        expect(r.code).toBe(ExitCode.critical);
        const f = byCheck(r.stdout)['replica-identity'];
        expect(f).toMatchObject({
          severity: 'critical',
          summary:
            '3 table(s) have no replica identity while the publication "flashback" publishes every table: the server refuses UPDATE and DELETE on them',
          details: ['public."Mixed Case"', 'public.deferred_pk', 'public.nopk'],
        });
        expect(f?.fix).toContain('DROP PUBLICATION flashback');
      } finally {
        await sql(server, db, 'DROP PUBLICATION flashback');
      }
    });

    it('finds a role without REPLICATION and without SELECT on tables and sequences (critical, exit 2)', async () => {
      const u = `postgres://${role}@${server.host}:${server.port}/${db}`;
      const r = await runCli(['doctor', u, '--json'], { env: { PGPASSWORD: rolePw } });
      expect(r.code).toBe(ExitCode.critical);
      const f = byCheck(r.stdout);
      expect(f['replication-privilege']).toMatchObject({ severity: 'critical' });
      expect(f['replication-privilege']?.fix).toContain(`ALTER ROLE ${role} REPLICATION`);
      // (Not tried without the privilege: the role's attribute is the finding to fix.)
      expect(f['replication-connection']).toBeUndefined();
      expect(f['select-privilege']?.severity).toBe('critical');
      expect(f['select-privilege']?.details).toEqual(
        expect.arrayContaining([
          'public.nopk',
          'public.parted',
          'public.scratch_u',
          'public.seq_s (sequence)',
        ]),
      );
      expect(f['select-privilege']?.details).not.toContain('public.ok_t');
      // SELECT without USAGE on the schema: a backup's LOCK TABLE is refused.
      expect(f['select-privilege']?.details).toContain('priv.t (no USAGE on its schema)');
      expect(f['select-privilege']?.fix).toContain('GRANT USAGE ON SCHEMA');
      // Row-level security the role does not bypass: a backup fails on the table.
      expect(f['row-security']).toMatchObject({
        severity: 'critical',
        details: ['public.sec'],
        fix: `ALTER ROLE ${role} BYPASSRLS`,
      });
    });
  },
);

describe('doctor on a server not set up for logical decoding', () => {
  let server: EmbeddedServer;
  beforeAll(async () => {
    server = await EmbeddedServer.start({
      major: 17,
      settings: { wal_level: 'replica', max_replication_slots: '2', max_wal_senders: '1' },
    });
    await sql(
      server as unknown as TestServer,
      'postgres',
      "SELECT pg_create_physical_replication_slot('held')",
    );
  });
  afterAll(async () => server.stop());

  it('reports wal_level and slot/sender capacity as critical or warning, with fixes (exit 2)', async () => {
    const r = await runCli(['doctor', server.url(), '--json']);
    expect(r.code).toBe(ExitCode.critical);
    const f = byCheck(r.stdout);
    expect(f['wal-level']).toMatchObject({
      severity: 'critical',
      summary: expect.stringContaining('wal_level is replica'),
    });
    expect(f['wal-level']?.fix).toContain('ALTER SYSTEM SET wal_level = logical');
    expect(f['replication-slots']).toMatchObject({
      severity: 'warning',
      summary: expect.stringMatching(/^1 of 2 replication slots free/),
    });
    expect(f['wal-senders']).toMatchObject({
      severity: 'warning',
      summary: expect.stringMatching(/^1 of 1 WAL senders free/),
    });
    expect(r.stdout).not.toContain(server.password);
  });
});

describe('doctor over the configured targets', () => {
  const server = testServers()[0]!;

  it('reports a target it cannot use and checks the others (exit 2); none usable is exit 3', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const target = (name: string, pwEnv: string) =>
        `  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: postgres\n    user: ${server.user}\n    password_env: ${pwEnv}\n`;
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `targets:\n${target('broken', 'FLASHBACK_TEST_UNSET_PW')}${target('good', 'PW')}`,
      );
      const r = await runCli(['doctor'], { cwd: dir, env: { PW: server.password } });
      expect(r.code, r.stderr).toBe(ExitCode.critical);
      expect(r.stdout).toMatch(
        /doctor: broken \(not connected\)\n +CRITICAL +config +.*FLASHBACK_TEST_UNSET_PW/,
      );
      expect(r.stdout).toMatch(/doctor: good \(.*\)\n(.*\n)* +ok +server-version/);

      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `targets:\n${target('broken', 'FLASHBACK_TEST_UNSET_PW')}`,
      );
      const none = await runCli(['doctor'], { cwd: dir });
      expect(none.code).toBe(ExitCode.usage);
      expect(none.stderr).toContain('FLASHBACK_TEST_UNSET_PW');
    } finally {
      await cleanup();
    }
  });
});
