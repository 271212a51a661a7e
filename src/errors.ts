/**
 * Typed errors shared by every layer, and the exit codes they map to.
 *
 * A `FlashbackError` is an expected failure: a user's mistake, an unreachable
 * server, a refusal. Its message says what failed and on what; its `hint`
 * says what to do. The CLI prints it without a stack trace. Anything else
 * thrown is a bug and is reported as an internal error (exit 70).
 */

/** Documented process exit codes (README "Exit codes"). Never renumber. */
export const ExitCode = {
  /** Success; for check commands: every check passed. */
  ok: 0,
  /** The command failed; for check commands (doctor, status): warnings found. */
  failed: 1,
  /** Check commands (doctor, status): at least one critical finding. */
  critical: 2,
  /** Bad command line or configuration file. */
  usage: 3,
  /** Refused by the guard: not confirmed, wrong name, no terminal, identity mismatch. */
  refused: 4,
  /** A target could not be reached: network, authentication, missing database. */
  unreachable: 5,
  /** The repository is missing, not initialised, of an unsupported format, or read-only for a command that writes. */
  repository: 6,
  /** The repository is locked by another process (see `flashback unlock`). */
  locked: 7,
  /**
   * Data is damaged or missing: `check` found a chunk or manifest that is
   * missing, unreadable or fails its hash; `verify` found a restored snapshot
   * that differs from what was backed up; any command met a chunk or
   * change-log segment it could not read.
   */
  damaged: 8,
  /** A bug in Flashback. */
  internal: 70,
  /** Interrupted by SIGINT, SIGTERM or SIGHUP. */
  interrupted: 130,
  /**
   * The output was closed by its reader (`| head`): stopped as on SIGTERM,
   * with the status a program killed by SIGPIPE has (Node ignores that signal).
   */
  outputClosed: 141,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** Options common to every Flashback error. */
export interface FlashbackErrorOptions {
  /** What the user can do about it; printed as `hint:`. */
  readonly hint?: string | undefined;
  /** The underlying error, shown with --debug. */
  readonly cause?: unknown;
}

/** Base class of every expected failure. */
export class FlashbackError extends Error {
  /** Stable machine-readable identifier, e.g. `config.invalid`. */
  readonly code: string;
  readonly exitCode: ExitCodeValue;
  readonly hint: string | undefined;

  constructor(
    code: string,
    exitCode: ExitCodeValue,
    message: string,
    options: FlashbackErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.exitCode = exitCode;
    this.hint = options.hint;
  }
}

/** A bad command line: unknown option, missing argument, conflicting flags. */
export class UsageError extends FlashbackError {
  constructor(message: string, options: FlashbackErrorOptions = {}) {
    super('usage', ExitCode.usage, message, options);
  }
}

/** One problem found in a configuration file, located as precisely as possible. */
export interface ConfigProblem {
  /** Dotted path of the offending key, e.g. `targets.prod.port`; empty for the whole file. */
  readonly path: string;
  readonly message: string;
  /** 1-based position in the file, when known. */
  readonly line?: number | undefined;
  readonly column?: number | undefined;
}

/** The configuration file is missing, unreadable or invalid. */
export class ConfigError extends FlashbackError {
  readonly file: string | undefined;
  readonly problems: readonly ConfigProblem[];

  constructor(
    file: string | undefined,
    problems: readonly ConfigProblem[],
    options: FlashbackErrorOptions = {},
  ) {
    super('config.invalid', ExitCode.usage, formatConfigProblems(file, problems), options);
    this.file = file;
    this.problems = problems;
  }
}

function formatConfigProblems(
  file: string | undefined,
  problems: readonly ConfigProblem[],
): string {
  const where = (p: ConfigProblem): string => {
    const pos =
      p.line === undefined ? '' : `:${p.line}${p.column === undefined ? '' : `:${p.column}`}`;
    const loc = file === undefined ? '' : `${file}${pos}: `;
    return `${loc}${p.path === '' ? '' : `${p.path}: `}${p.message}`;
  };
  if (problems.length === 1) return `invalid configuration: ${where(problems[0]!)}`;
  return `invalid configuration (${problems.length} problems):\n${problems.map((p) => `  - ${where(p)}`).join('\n')}`;
}

/** Why the guard refused. */
export type RefusalReason =
  | 'not-confirmed'
  | 'wrong-confirmation'
  | 'fingerprint-changed'
  | 'fingerprint-collision'
  /** `targets accept` of an unprotected target sharing a protected one's database. */
  | 'unprotected-alias';

/** The guard refused a write to a target. Nothing was written. */
export class GuardRefusedError extends FlashbackError {
  readonly reason: RefusalReason;
  readonly target: string;

  constructor(
    reason: RefusalReason,
    target: string,
    message: string,
    options: FlashbackErrorOptions = {},
  ) {
    super(`guard.${reason}`, ExitCode.refused, message, options);
    this.reason = reason;
    this.target = target;
  }
}

/** A target could not be connected to. The message never contains a password. */
export class TargetUnreachableError extends FlashbackError {
  readonly target: string;

  constructor(target: string, message: string, options: FlashbackErrorOptions = {}) {
    super('target.unreachable', ExitCode.unreachable, message, options);
    this.target = target;
  }
}

/** The repository is missing, not initialised, or has an unsupported format version. */
export class RepositoryError extends FlashbackError {
  constructor(code: string, message: string, options: FlashbackErrorOptions = {}) {
    super(`repository.${code}`, ExitCode.repository, message, options);
  }
}

/** Another process holds a conflicting repository lock. */
export class RepositoryLockedError extends FlashbackError {
  constructor(message: string, options: FlashbackErrorOptions = {}) {
    super('repository.locked', ExitCode.locked, message, options);
  }
}

/** An operation failed for a reason outside the user's input (a query error, an I/O error). */
export class OperationError extends FlashbackError {
  constructor(code: string, message: string, options: FlashbackErrorOptions = {}) {
    super(code, ExitCode.failed, message, options);
  }
}

/** The process received SIGINT or SIGTERM and stopped its work. */
export class InterruptedError extends FlashbackError {
  constructor(message = 'interrupted') {
    super('interrupted', ExitCode.interrupted, message);
  }
}

/** Stored data is missing or damaged, or a restore-test found a difference. */
export class DamagedError extends FlashbackError {
  constructor(code: string, message: string, options: FlashbackErrorOptions = {}) {
    super(code, ExitCode.damaged, message, options);
  }
}
