/**
 * Turning what a user typed (a target name, a postgres:// URL, or nothing
 * with DATABASE_URL / PG* set) into a resolved target with connection
 * parameters. Passwords come from environment variables and are registered
 * as secrets so they are never printed.
 */
import os from 'node:os';
import { parse as parseConnectionString } from 'pg-connection-string';
import { ConfigError, UsageError } from '../errors.js';
import { registerSecret } from '../secrets.js';
import { type FlashbackConfig, SSL_MODES, type TargetConfig } from './schema.js';

/** libpq's sslmode values. */
export type SslMode = (typeof SSL_MODES)[number];

/** Everything needed to open a connection. `password` is a secret. */
export interface ConnectionParams {
  readonly host: string;
  readonly port: number;
  readonly database: string;
  readonly user: string;
  readonly password?: string | undefined;
  readonly sslmode?: SslMode | undefined;
}

/** Where a target came from: the config file, a URL on the command line, or the environment. */
export type TargetKind = 'config' | 'url' | 'env';

/** A target ready to connect to. */
export interface ResolvedTarget {
  /** The configured name; for URL and environment targets a password-free display form. */
  readonly name: string;
  readonly kind: TargetKind;
  readonly connection: ConnectionParams;
  /** Protected targets need a typed confirmation before any write (see guard/). */
  readonly protected: boolean;
  /** What `--confirm` must be given: the target's name, or for URL/env targets its database name. */
  readonly confirmName: string;
  readonly description?: string | undefined;
  /**
   * The configured targets that are protected (a named target's): the guard
   * lets an unprotected target share a database with another only while
   * that one is not protected (guard/identity.ts).
   */
  readonly protectedTargets?: ReadonlySet<string> | undefined;
}

const URL_RE = /^postgres(ql)?:\/\//i;

/** True if a string is a postgres:// URL rather than a target name. */
export function isTargetUrl(ref: string): boolean {
  return URL_RE.test(ref);
}

/**
 * Resolves a target reference.
 * - a `postgres://` URL: a one-off target, always protected;
 * - a configured name;
 * - undefined: the one-off target described by DATABASE_URL or PG* variables.
 * Throws UsageError for an unknown name or no target at all, ConfigError for
 * a missing password variable.
 */
export function resolveTarget(
  ref: string | undefined,
  config: FlashbackConfig,
  env: NodeJS.ProcessEnv,
): ResolvedTarget {
  if (ref === undefined) {
    const fromEnv = environmentTarget(env);
    if (fromEnv !== undefined) return fromEnv;
    const names = Object.keys(config.targets);
    throw new UsageError('no target given', {
      hint:
        names.length > 0
          ? `name one of the configured targets (${names.join(', ')}), or give a postgres:// URL`
          : 'give a postgres:// URL, set DATABASE_URL, or declare targets in flashback.yaml (`flashback init`)',
    });
  }
  if (isTargetUrl(ref)) return urlTarget(ref, 'url', displayUrl(ref));
  const t = config.targets[ref];
  if (t === undefined) {
    const names = Object.keys(config.targets);
    throw new UsageError(`unknown target "${ref}"`, {
      hint:
        names.length > 0
          ? `configured targets: ${names.join(', ')}; or give a postgres:// URL`
          : 'no targets are configured: declare it in flashback.yaml, or give a postgres:// URL',
    });
  }
  return configTarget(ref, t, env, protectedNames(config));
}

/** Every configured target, in file order. Targets whose password variable is unset come back as errors. */
export function configuredTargets(
  config: FlashbackConfig,
  env: NodeJS.ProcessEnv,
): Array<{ name: string; target?: ResolvedTarget; error?: ConfigError }> {
  return Object.entries(config.targets).map(([name, t]) => {
    try {
      return { name, target: configTarget(name, t, env, protectedNames(config)) };
    } catch (err) {
      if (err instanceof ConfigError) return { name, error: err };
      throw err;
    }
  });
}

/** The one-off target from DATABASE_URL, else from PG* variables, else undefined. */
export function environmentTarget(env: NodeJS.ProcessEnv): ResolvedTarget | undefined {
  const url = env.DATABASE_URL;
  if (url !== undefined && url !== '') {
    if (!isTargetUrl(url)) {
      throw new ConfigError(undefined, [
        { path: 'DATABASE_URL', message: 'expected a postgres:// or postgresql:// URL' },
      ]);
    }
    return urlTarget(url, 'env', `$DATABASE_URL (${displayUrl(url)})`);
  }
  if (!['PGHOST', 'PGPORT', 'PGDATABASE', 'PGUSER'].some((k) => nonEmpty(env[k]) !== undefined)) {
    return undefined;
  }
  const user = nonEmpty(env.PGUSER) ?? os.userInfo().username;
  const connection: ConnectionParams = {
    host: nonEmpty(env.PGHOST) ?? 'localhost',
    port: parsePort(nonEmpty(env.PGPORT) ?? '5432', 'PGPORT'),
    database: nonEmpty(env.PGDATABASE) ?? user,
    user,
    password: secret(nonEmpty(env.PGPASSWORD)),
    sslmode: sslMode(nonEmpty(env.PGSSLMODE), 'PGSSLMODE'),
  };
  return {
    name: `$PG* (${connection.user}@${connection.host}:${connection.port}/${connection.database})`,
    kind: 'env',
    connection,
    protected: true,
    confirmName: connection.database,
  };
}

/** The names of the protected targets of a configuration. */
function protectedNames(config: FlashbackConfig): ReadonlySet<string> {
  return new Set(
    Object.entries(config.targets)
      .filter(([, t]) => t.protected)
      .map(([n]) => n),
  );
}

function configTarget(
  name: string,
  t: TargetConfig,
  env: NodeJS.ProcessEnv,
  protectedTargets: ReadonlySet<string>,
): ResolvedTarget {
  let password: string | undefined;
  if (t.password_env !== undefined) {
    password = env[t.password_env];
    if (password === undefined) {
      throw new ConfigError(
        undefined,
        [
          {
            path: `targets.${name}.password_env`,
            message: `environment variable ${t.password_env} is not set`,
          },
        ],
        { hint: `export ${t.password_env}=... before running flashback` },
      );
    }
    registerSecret(password);
  }
  const base =
    t.url !== undefined
      ? urlTarget(t.url, 'config', name).connection
      : {
          host: t.host ?? 'localhost',
          port: t.port ?? 5432,
          database: t.database ?? '',
          user: t.user ?? os.userInfo().username,
        };
  const connection: ConnectionParams = {
    ...base,
    ...(password !== undefined ? { password } : {}),
    ...(t.sslmode !== undefined ? { sslmode: t.sslmode } : {}),
  };
  return {
    name,
    kind: 'config',
    connection,
    protected: t.protected,
    confirmName: name,
    description: t.description,
    protectedTargets,
  };
}

function urlTarget(url: string, kind: TargetKind, name: string): ResolvedTarget {
  let parsed: ReturnType<typeof parseConnectionString>;
  try {
    parsed = parseConnectionString(url);
  } catch (err) {
    throw new UsageError(`not a valid PostgreSQL URL: ${displayUrl(url)}`, { cause: err });
  }
  const user = parsed.user || os.userInfo().username;
  const database = parsed.database || user;
  const connection: ConnectionParams = {
    host: parsed.host || 'localhost',
    port: parsePort(parsed.port || '5432', 'URL port'),
    database,
    user,
    password: secret(parsed.password),
    sslmode: sslMode(
      new URL(url.replace(URL_RE, 'http://')).searchParams.get('sslmode') ?? undefined,
      'sslmode',
    ),
  };
  return { name, kind, connection, protected: true, confirmName: database };
}

/** A URL with any password removed, for display. */
export function displayUrl(url: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/[^:/@]*):[^@]*@/i, '$1@');
}

function secret(s: string | undefined): string | undefined {
  registerSecret(s);
  return s;
}

function parsePort(s: string, what: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    throw new UsageError(`${what}: expected a port from 1 to 65535, got "${s}"`);
  }
  return n;
}

function sslMode(s: string | undefined, what: string): SslMode | undefined {
  if (s === undefined) return undefined;
  const modes: readonly string[] = SSL_MODES;
  if (!modes.includes(s)) throw new UsageError(`${what}: unknown sslmode "${s}"`);
  return s as SslMode;
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s;
}
