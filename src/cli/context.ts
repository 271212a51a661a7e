/**
 * What every command gets: global options, the environment, output streams
 * that never print a secret, and lazily loaded configuration and repository.
 */
import path from 'node:path';
import { type LoadedConfig, loadConfig } from '../config/load.js';
import { RepositoryError } from '../errors.js';
import { FingerprintStore } from '../guard/fingerprints.js';
import type { GuardIO } from '../guard/guard.js';
import { Repository } from '../repo/repository.js';
import { redact } from '../secrets.js';
import { openStorage } from '../storage/open.js';

/** Set while a cooperative command runs; see CliContext.interruptSignal. */
let interruptHandler: (() => void) | undefined;

/** Called by the CLI's signal handler: true if a running command will stop by itself. */
export function requestInterrupt(): boolean {
  if (interruptHandler === undefined) return false;
  interruptHandler();
  return true;
}

/** Options accepted by every command. */
export interface GlobalOptions {
  readonly config?: string | undefined;
  readonly repo?: string | undefined;
  readonly json?: boolean | undefined;
  readonly debug?: boolean | undefined;
}

/** The process's streams and environment; tests pass their own. */
export interface CliIO {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly stdin: NodeJS.ReadableStream & { readonly isTTY?: boolean | undefined };
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
}

/** Per-invocation state shared by the commands. */
export class CliContext {
  private loaded: Promise<LoadedConfig> | undefined;
  /** The controller of interruptSignal(), once a command asked for it. */
  private interrupt: AbortController | undefined;
  /** Unreadable manifests already warned of (a long `serve` meets them again). */
  private readonly warnedManifests = new Set<string>();

  constructor(
    readonly options: GlobalOptions,
    readonly io: CliIO,
  ) {}

  get json(): boolean {
    return this.options.json === true;
  }

  get env(): NodeJS.ProcessEnv {
    return this.io.env;
  }

  /** Writes to stdout, with secrets masked. */
  out(text: string): void {
    this.io.stdout.write(redact(text));
  }

  /** Writes to stderr, with secrets masked. */
  err(text: string): void {
    this.io.stderr.write(redact(text));
  }

  /** Prints a value as JSON on stdout (the `--json` output of a command). */
  printJson(value: unknown): void {
    this.out(`${JSON.stringify(value, null, 2)}\n`);
  }

  /**
   * A signal aborted on the first Ctrl-C (SIGINT/SIGTERM) for commands that
   * stop cooperatively (finishing writes in flight, removing temporary files).
   * Commands that never ask for it are stopped at once instead.
   */
  interruptSignal(): AbortSignal {
    const controller = new AbortController();
    interruptHandler = () => controller.abort();
    this.interrupt = controller;
    return controller.signal;
  }

  /**
   * The guard talks on stderr, so stdout stays machine-readable. Its prompt
   * ends at Ctrl-C when the command stops cooperatively (its signal is read
   * when the prompt opens: commands ask for it while building their options).
   */
  get guardIO(): GuardIO {
    const self = this;
    return {
      input: this.io.stdin,
      output: { write: (s: string) => this.err(s) },
      get signal() {
        return self.interrupt?.signal;
      },
    };
  }

  /** The configuration (loaded once). */
  config(): Promise<LoadedConfig> {
    this.loaded ??= loadConfig({
      configPath: this.options.config,
      env: this.env,
      cwd: this.io.cwd,
    });
    return this.loaded;
  }

  /**
   * The repository location: `--repo`, then FLASHBACK_REPO, then the config
   * file's `repository` (relative to the config file's directory).
   */
  async repositoryLocation(): Promise<string | undefined> {
    if (this.options.repo !== undefined) return resolveLocation(this.options.repo, this.io.cwd);
    const fromEnv = this.env.FLASHBACK_REPO;
    if (fromEnv !== undefined && fromEnv !== '') return resolveLocation(fromEnv, this.io.cwd);
    const { file, config } = await this.config();
    if (config.repository === undefined) return undefined;
    return resolveLocation(
      config.repository,
      file === undefined ? this.io.cwd : path.dirname(file),
    );
  }

  /** Opens the repository; throws RepositoryError if none is configured or it is missing. */
  async repository(): Promise<Repository> {
    const location = await this.repositoryLocation();
    if (location === undefined) {
      throw new RepositoryError('unset', 'no repository configured', {
        hint: 'give --repo PATH, set FLASHBACK_REPO, or set repository in flashback.yaml',
      });
    }
    return Repository.open(openStorage(location), {
      // Readers go on without a snapshot whose manifest cannot be read, and say so.
      onUnreadableManifest: ({ id, error }) => {
        if (this.warnedManifests.has(id)) return;
        this.warnedManifests.add(id);
        this.err(
          `flashback: warning: ${error.message}; left out${error.code === 'repository.version' ? '' : ', as damaged'} (${error.hint ?? 'run `flashback check`'})\n`,
        );
      },
    });
  }

  /**
   * The fingerprint store if a repository is configured and exists; otherwise
   * a note saying why fingerprints are not being checked.
   */
  async fingerprints(): Promise<{ store?: FingerprintStore; note?: string }> {
    try {
      return { store: new FingerprintStore(await this.repository()) };
    } catch (err) {
      if (err instanceof RepositoryError)
        return { note: `identity fingerprints not checked: ${err.message}` };
      throw err;
    }
  }
}

function resolveLocation(location: string, base: string): string {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(location) ? location : path.resolve(base, location);
}
