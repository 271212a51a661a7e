/**
 * Finding, parsing and validating the configuration file.
 *
 * Order of precedence for the file: `--config PATH`, then `FLASHBACK_CONFIG`,
 * then `./flashback.yaml`. No file at all is fine (URL targets, DATABASE_URL
 * and `--repo` still work); a file that was asked for and is missing is not.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { type Document, isMap, LineCounter, parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigError, type ConfigProblem } from '../errors.js';
import { formatDuration } from './duration.js';
import { configSchema, type FlashbackConfig, freshnessFor } from './schema.js';

/** The default file name looked for in the working directory. */
export const DEFAULT_CONFIG_FILE = 'flashback.yaml';

/** A loaded configuration and where it came from. */
export interface LoadedConfig {
  /** Absolute path of the file read, or undefined when none was found. */
  readonly file: string | undefined;
  readonly config: FlashbackConfig;
}

/** Where to look for the configuration. */
export interface ConfigLocation {
  /** `--config PATH`, if given. */
  readonly configPath?: string | undefined;
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
}

/** Picks the configuration file path per the precedence above; `explicit` tells if it must exist. */
export function configFilePath(loc: ConfigLocation): { file: string; explicit: boolean } {
  const given = loc.configPath ?? nonEmpty(loc.env.FLASHBACK_CONFIG);
  if (given !== undefined) return { file: path.resolve(loc.cwd, given), explicit: true };
  return { file: path.resolve(loc.cwd, DEFAULT_CONFIG_FILE), explicit: false };
}

/** Loads and validates the configuration; throws ConfigError naming every problem found. */
export async function loadConfig(loc: ConfigLocation): Promise<LoadedConfig> {
  const { file, explicit } = configFilePath(loc);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !explicit) return { file: undefined, config: configSchema.parse({}) };
    const why = code === 'ENOENT' ? 'file not found' : `cannot read it (${code ?? String(err)})`;
    throw new ConfigError(file, [{ path: '', message: why }], {
      hint: 'check --config / FLASHBACK_CONFIG, or run `flashback init` to write a starter file',
      cause: err,
    });
  }
  return { file, config: parseConfig(text, file) };
}

/** Parses configuration text; `file` is used only in messages. */
export function parseConfig(text: string, file: string | undefined): FlashbackConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => {
        const pos = lineCounter.linePos(e.pos[0]);
        return {
          path: '',
          message: `not valid YAML: ${firstLine(e.message)}`,
          line: pos.line,
          column: pos.col,
        };
      }),
    );
  }
  const data: unknown = doc.toJS() ?? {};
  const result = configSchema.safeParse(data);
  if (result.success) {
    const crossed = crossedThresholds(result.data);
    if (crossed.length === 0) return result.data;
    throw new ConfigError(
      file,
      crossed.map((c) => ({
        path: c.at.join('.'),
        message: c.message,
        ...position(doc, lineCounter, c.at, false),
      })),
      { hint: 'see docs/CONFIG.md, "Freshness"' },
    );
  }
  const problems = result.error.issues.flatMap((issue) =>
    toProblems(issue, data, doc, lineCounter),
  );
  throw new ConfigError(file, problems, {
    hint: 'see docs/CONFIG.md; `flashback init` in an empty directory writes a commented example',
  });
}

/**
 * Warning thresholds past their critical once a target's own, the
 * top-level and the default values are merged (freshnessFor): such a
 * warning would never be seen. (Both in one block is the schema's check.)
 */
function crossedThresholds(config: FlashbackConfig): Array<{ at: string[]; message: string }> {
  const out: Array<{ at: string[]; message: string }> = [];
  const pairs = [
    ['backup', 'backupWarning', 'backupCritical'],
    ['verified', 'verifiedWarning', 'verifiedCritical'],
    ['recovery_point', 'recoveryPointWarning', 'recoveryPointCritical'],
  ] as const;
  for (const target of Object.keys(config.targets)) {
    const f = freshnessFor(config, target);
    const own = config.targets[target]?.freshness ?? {};
    for (const [kind, warning, critical] of pairs) {
      if (f[warning] <= f[critical]) continue;
      const key = `${kind}_warning` as const;
      const at =
        own[key] !== undefined
          ? ['targets', target, 'freshness', key]
          : config.freshness[key] !== undefined
            ? ['freshness', key]
            : ['targets', target, 'freshness', `${kind}_critical`];
      if (out.some((o) => o.at.join('.') === at.join('.'))) continue;
      out.push({
        at,
        message: `for target "${target}", ${kind}_warning (${formatDuration(f[warning])}) is past ${kind}_critical (${formatDuration(f[critical])}): the warning would never be seen`,
      });
    }
  }
  return out;
}

function toProblems(
  issue: z.core.$ZodIssue,
  data: unknown,
  doc: Document,
  lc: LineCounter,
): ConfigProblem[] {
  const at = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({
      path: [...at, key].join('.'),
      message: unknownKeyMessage(key, knownKeys(at)),
      ...position(doc, lc, [...at, key], true),
    }));
  }
  let message = issue.message;
  if (issue.code === 'invalid_type') {
    const actual = valueAt(data, at);
    message =
      actual === undefined
        ? `missing: expected ${issue.expected}`
        : issue.message.startsWith('Invalid input')
          ? `expected ${issue.expected}, got ${describe(actual)}`
          : `${issue.message}, got ${describe(actual)}`;
  } else if (issue.code === 'invalid_value') {
    message = `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${describe(valueAt(data, at))}`;
  } else if (issue.code === 'invalid_key') {
    message = `invalid name "${at[at.length - 1] ?? ''}": ${issue.issues[0]?.message ?? issue.message}`;
  }
  return [{ path: at.join('.'), message, ...position(doc, lc, at, issue.code === 'invalid_key') }];
}

/** Keys accepted at a path, for "did you mean" suggestions: read from the schema itself. */
function knownKeys(at: readonly string[]): readonly string[] {
  let node: unknown = configSchema;
  for (const segment of at) {
    node = child(unwrap(node), segment);
    if (node === undefined) return [];
  }
  const shape = (unwrap(node) as { shape?: Record<string, unknown> }).shape;
  return shape === undefined ? [] : Object.keys(shape);
}

/** Zod's internal definition of a schema (stable across zod 4 releases). */
interface Def {
  readonly type?: string;
  readonly innerType?: unknown;
  readonly in?: unknown;
  readonly valueType?: unknown;
  readonly element?: unknown;
}

function def(schema: unknown): Def {
  return ((schema as { _zod?: { def?: Def } })._zod?.def ?? {}) as Def;
}

/** Through optional, default and pipe (transform) wrappers to the schema that has the shape. */
function unwrap(schema: unknown): unknown {
  let s = schema;
  for (let d = def(s); d.innerType !== undefined || d.type === 'pipe'; d = def(s)) {
    s = d.innerType ?? d.in;
  }
  return s;
}

/** The schema of a key (objects), a value (records) or an element (arrays). */
function child(schema: unknown, key: string): unknown {
  const d = def(schema);
  if (d.type === 'record') return d.valueType;
  if (d.type === 'array') return d.element;
  return (schema as { shape?: Record<string, unknown> }).shape?.[key];
}

function unknownKeyMessage(key: string, known: readonly string[]): string {
  if (key === 'password') {
    return 'inline passwords are not accepted: put the password in an environment variable and name it with password_env';
  }
  const close = known.filter((k) => editDistance(k, key) <= 2);
  const suggestion = close.length > 0 ? ` (did you mean ${close.join(' or ')}?)` : '';
  return `unknown key "${key}"${suggestion}${known.length > 0 ? `; expected one of: ${known.join(', ')}` : ''}`;
}

function position(
  doc: Document,
  lc: LineCounter,
  at: readonly string[],
  wantKey: boolean,
): { line?: number; column?: number } {
  // Walk the YAML nodes along the path; for a key problem point at the key itself.
  let node: unknown = doc.contents;
  let offset: number | undefined;
  for (const seg of at) {
    if (!isMap(node)) break;
    const pair = node.items.find((p) => String((p.key as { value?: unknown })?.value) === seg);
    if (pair === undefined) break;
    const keyRange = (pair.key as { range?: [number, number, number] }).range;
    const valRange = (pair.value as { range?: [number, number, number] } | null)?.range;
    // A problem with a whole mapping is shown at its key, a scalar's at its value.
    offset = wantKey || isMap(pair.value) ? keyRange?.[0] : (valRange?.[0] ?? keyRange?.[0]);
    node = pair.value;
  }
  if (offset === undefined) return {};
  const pos = lc.linePos(offset);
  return { line: pos.line, column: pos.col };
}

function valueAt(data: unknown, at: readonly string[]): unknown {
  let v = data;
  for (const seg of at) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[seg];
  }
  return v;
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${String(v)}`;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s;
}
