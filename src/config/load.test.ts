import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, ExitCode } from '../errors.js';
import { loadConfig, parseConfig } from './load.js';
import { starterConfig } from './starter.js';

function problemsOf(text: string, file = 'flashback.yaml'): ConfigError {
  try {
    parseConfig(text, file);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('configuration file', () => {
  it('accepts a full valid file and applies defaults', () => {
    const c = parseConfig(
      `repository: ./repo
targets:
  prod:
    host: db.internal
    port: 5433
    database: shop
    user: app
    password_env: PROD_PGPASSWORD
    sslmode: require
  scratch:
    url: postgres://app@localhost/scratch
    protected: false
`,
      'f.yaml',
    );
    expect(c.repository).toBe('./repo');
    expect(c.targets.prod).toMatchObject({ host: 'db.internal', port: 5433, protected: true });
    expect(c.targets.scratch?.protected).toBe(false);
  });

  it('names an unknown key with its path, line and a suggestion', () => {
    const e = problemsOf('targets:\n  prod:\n    database: shop\n    pasword_env: X\n');
    expect(e.exitCode).toBe(ExitCode.usage);
    expect(e.problems).toHaveLength(1);
    expect(e.problems[0]).toMatchObject({ path: 'targets.prod.pasword_env', line: 4, column: 5 });
    expect(e.message).toContain(
      'flashback.yaml:4:5: targets.prod.pasword_env: unknown key "pasword_env" (did you mean password_env?)',
    );
  });

  it('says what type was expected and what was found', () => {
    const e = problemsOf(
      'targets:\n  prod:\n    database: shop\n    port: "abc"\n    protected: yes please\n',
    );
    const byPath = Object.fromEntries(e.problems.map((p) => [p.path, p]));
    expect(byPath['targets.prod.port']?.message).toBe(
      'expected a port number, got the string "abc"',
    );
    expect(byPath['targets.prod.port']?.line).toBe(4);
    expect(byPath['targets.prod.protected']?.message).toBe(
      'expected true or false, got the string "yes please"',
    );
  });

  it('refuses settings that would fail silently later: a warning past its critical, a zero check interval, a webhook that is not http(s)', () => {
    const e = problemsOf(
      'serve:\n  check_interval: 0s\nfreshness:\n  backup_warning: 10h\n  backup_critical: 30s\nalerts:\n  webhooks:\n    - url: ftp://x/y\ntargets: {}\n',
    );
    const byPath = Object.fromEntries(e.problems.map((p) => [p.path, p.message]));
    expect(byPath['serve.check_interval']).toBe('expected at least 1s');
    expect(byPath['freshness.backup_warning']).toContain('expected at most backup_critical');
    expect(byPath['alerts.webhooks.0.url']).toBe('expected an http:// or https:// URL');
    // Across blocks too: a warning past the default critical, or the top-level one.
    const merged = problemsOf(
      'freshness:\n  verified_critical: 1d\ntargets:\n  prod:\n    database: app\n    freshness:\n      verified_warning: 2d\n      recovery_point_warning: 10m\n',
    );
    expect(merged.problems.map((p) => [p.path, p.message])).toEqual([
      [
        'targets.prod.freshness.verified_warning',
        'for target "prod", verified_warning (2d) is past verified_critical (1d): the warning would never be seen',
      ],
      [
        'targets.prod.freshness.recovery_point_warning',
        'for target "prod", recovery_point_warning (10m) is past recovery_point_critical (5m): the warning would never be seen',
      ],
    ]);
  });

  it('refuses an inline password and says how to give one', () => {
    const e = problemsOf('targets:\n  prod:\n    database: shop\n    password: hunter2\n');
    expect(e.message).toContain('targets.prod.password: inline passwords are not accepted');
    expect(e.message).toContain('password_env');
    expect(e.message).not.toContain('hunter2');
  });

  it('rejects bad target names, url mixed with fields, missing database, bad sslmode', () => {
    const e = problemsOf(
      'targets:\n  Prod DB:\n    database: x\n  a:\n    url: postgres://h/db\n    host: h\n  b:\n    host: h\n  c:\n    database: d\n    sslmode: maybe\n',
      'test.yaml',
    );
    const text = e.message;
    expect(text).toContain('targets.Prod DB: invalid name "Prod DB"');
    expect(text).toContain('targets.a.host: give either url or host, not both');
    expect(text).toContain('test.yaml:7:3: targets.b: a target needs either url or database');
    expect(text).toContain(
      'targets.c.sslmode: expected one of "disable", "prefer", "require", "verify-ca", "verify-full", got the string "maybe"',
    );
  });

  it('reports YAML syntax errors with a position', () => {
    const e = problemsOf('targets:\n  prod: [unclosed\n');
    expect(e.problems[0]?.message).toMatch(/^not valid YAML/);
    expect(e.problems[0]?.line).toBeGreaterThan(0);
  });

  it('parses the starter file that init writes', () => {
    const c = parseConfig(starterConfig('./flashback-repo'), 'starter');
    expect(c).toMatchObject({ version: 1, repository: './flashback-repo', targets: {} });
  });

  it('finds the file by --config, then FLASHBACK_CONFIG, then ./flashback.yaml', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'fb-cfg-'));
    await writeFile(path.join(dir, 'flashback.yaml'), 'repository: cwd\n');
    await writeFile(path.join(dir, 'env.yaml'), 'repository: env\n');
    await writeFile(path.join(dir, 'flag.yaml'), 'repository: flag\n');
    const env = { FLASHBACK_CONFIG: 'env.yaml' };
    expect((await loadConfig({ cwd: dir, env: {} })).config.repository).toBe('cwd');
    expect((await loadConfig({ cwd: dir, env })).config.repository).toBe('env');
    expect((await loadConfig({ cwd: dir, env, configPath: 'flag.yaml' })).config.repository).toBe(
      'flag',
    );
  });

  it('is fine without a file, but not when one was asked for and is missing', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'fb-cfg-'));
    const none = await loadConfig({ cwd: dir, env: {} });
    expect(none.file).toBeUndefined();
    expect(none.config.targets).toEqual({});
    await expect(loadConfig({ cwd: dir, env: {}, configPath: 'nope.yaml' })).rejects.toThrow(
      /nope\.yaml: file not found/,
    );
  });
});
