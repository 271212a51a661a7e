import { describe, expect, it } from 'vitest';
import { ConfigError, UsageError } from '../errors.js';
import { redact } from '../secrets.js';
import { parseConfig } from './load.js';
import { configuredTargets, environmentTarget, resolveTarget } from './targets.js';

const config = parseConfig(
  `targets:
  prod:
    host: db.internal
    database: shop
    user: app
    password_env: PROD_PW
  scratch:
    url: postgres://dev@localhost:6543/scratch
    protected: false
`,
  'test',
);

describe('target resolution', () => {
  it('resolves a configured target with its password from the environment', () => {
    const t = resolveTarget('prod', config, { PROD_PW: 's3cret-prod' });
    expect(t).toMatchObject({ name: 'prod', kind: 'config', protected: true, confirmName: 'prod' });
    expect(t.connection).toEqual({
      host: 'db.internal',
      port: 5432,
      database: 'shop',
      user: 'app',
      password: 's3cret-prod',
    });
    expect(redact('failed for s3cret-prod')).toBe('failed for ********');
  });

  it('names a missing password variable', () => {
    expect(() => resolveTarget('prod', config, {})).toThrow(ConfigError);
    expect(() => resolveTarget('prod', config, {})).toThrow(
      /targets\.prod\.password_env: environment variable PROD_PW is not set/,
    );
    const listed = configuredTargets(config, {});
    expect(listed[0]?.error).toBeInstanceOf(ConfigError);
    expect(listed[1]?.target?.name).toBe('scratch');
  });

  it('treats a URL as a protected one-off target confirmed by its database name', () => {
    const t = resolveTarget('postgres://app:pw-in-url@h.example:5444/billing', config, {});
    expect(t).toMatchObject({ kind: 'url', protected: true, confirmName: 'billing' });
    expect(t.name).toBe('postgres://app@h.example:5444/billing');
    expect(t.connection).toMatchObject({
      host: 'h.example',
      port: 5444,
      user: 'app',
      password: 'pw-in-url',
    });
    expect(redact('x pw-in-url y')).not.toContain('pw-in-url');
  });

  it('keeps a configured URL target unprotected when configured so', () => {
    const t = resolveTarget('scratch', config, {});
    expect(t).toMatchObject({
      protected: false,
      connection: { host: 'localhost', port: 6543, database: 'scratch', user: 'dev' },
    });
  });

  it('uses DATABASE_URL, else PG* variables, for a one-off target', () => {
    const fromUrl = resolveTarget(undefined, config, { DATABASE_URL: 'postgresql://u@h/appdb' });
    expect(fromUrl).toMatchObject({ kind: 'env', protected: true, confirmName: 'appdb' });
    const fromPg = environmentTarget({
      PGHOST: 'pghost',
      PGPORT: '6000',
      PGDATABASE: 'd',
      PGUSER: 'u',
      PGPASSWORD: 'pgpw',
    });
    expect(fromPg?.connection).toEqual({
      host: 'pghost',
      port: 6000,
      database: 'd',
      user: 'u',
      password: 'pgpw',
      sslmode: undefined,
    });
    expect(environmentTarget({})).toBeUndefined();
  });

  it('explains an unknown name or a missing target', () => {
    expect(() => resolveTarget('prd', config, {})).toThrow(UsageError);
    try {
      resolveTarget('prd', config, {});
    } catch (err) {
      expect((err as UsageError).hint).toContain('prod, scratch');
    }
    expect(() => resolveTarget(undefined, config, {})).toThrow(/no target given/);
  });

  it('redacts passwords in URLs of any message', () => {
    expect(redact('cannot reach postgres://bob:topsecret@db/x')).toBe(
      'cannot reach postgres://bob:********@db/x',
    );
  });
});
