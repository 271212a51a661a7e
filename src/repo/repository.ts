/**
 * The repository: Flashback's data, on a storage backend. This module owns
 * the repository's identity file (`config.json`) and its format version;
 * docs/REPOSITORY.md is the specification.
 */
import { randomUUID } from 'node:crypto';
import { RepositoryError } from '../errors.js';
import { ObjectNotFoundError, type Storage } from '../storage/storage.js';
import type { UnreadableManifest } from './snapshots.js';

/** The format version this build writes and the newest it reads. */
export const REPOSITORY_FORMAT_VERSION = 1;

/** Contents of `config.json`, the file that makes a location a repository. */
export interface RepositoryConfig {
  readonly format: 'flashback-repository';
  readonly version: number;
  /** Random id, so two repositories are never confused. */
  readonly id: string;
  readonly created: string;
}

const CONFIG_KEY = 'config.json';

/** How the caller wants to hear of damage met while reading (see SnapshotStore.of). */
export interface RepositoryOptions {
  /**
   * An unreadable snapshot manifest met by a reader that can go on without
   * it (the CLI prints a warning). Unset: such readers fail instead.
   */
  readonly onUnreadableManifest?: ((m: UnreadableManifest) => void) | undefined;
}

/** An opened repository. */
export class Repository {
  private constructor(
    readonly storage: Storage,
    readonly config: RepositoryConfig,
    readonly options: RepositoryOptions = {},
  ) {}

  /**
   * Creates a repository; refuses if the location already holds one, or
   * holds anything a repository does not (see `foreignObject`).
   */
  static async init(storage: Storage): Promise<Repository> {
    let foreign: string | undefined;
    try {
      // (An existing repository is "exists" below, even with a stray file in it.)
      if ((await storage.stat(CONFIG_KEY)) === undefined) foreign = await foreignObject(storage);
    } catch (err) {
      throw notADirectory(storage, err) ?? err;
    }
    if (foreign !== undefined) {
      throw new RepositoryError(
        'not-empty',
        `${storage.location} is not empty and is not a Flashback repository (it holds ${foreign})`,
        {
          hint: 'choose an empty directory or a new one for the repository: prune deletes what it does not recognise under chunks/, and other tools may delete what Flashback writes',
        },
      );
    }
    const config: RepositoryConfig = {
      format: 'flashback-repository',
      version: REPOSITORY_FORMAT_VERSION,
      id: randomUUID(),
      created: new Date().toISOString(),
    };
    const written = await storage
      .writeIfAbsent(CONFIG_KEY, Buffer.from(`${JSON.stringify(config, null, 2)}\n`))
      .catch((err: unknown) => {
        throw notADirectory(storage, err) ?? err;
      });
    if (!written) {
      throw new RepositoryError('exists', `a repository already exists at ${storage.location}`, {
        hint: 'use it as it is, or choose another location',
      });
    }
    return new Repository(storage, config);
  }

  /** Opens an existing repository; rejects a missing one and one of an unknown or newer format. */
  static async open(storage: Storage, options: RepositoryOptions = {}): Promise<Repository> {
    let bytes: Buffer;
    try {
      bytes = await storage.read(CONFIG_KEY);
    } catch (err) {
      if (err instanceof ObjectNotFoundError) {
        if (await holdsData(storage)) {
          // Not a wrong path: a repository that lost its identity file.
          throw new RepositoryError(
            'missing',
            `${storage.location} holds Flashback data (snapshots/, chunks/ or changes/) but no ${CONFIG_KEY}`,
            {
              hint: `copy ${CONFIG_KEY} back from a copy of the repository; if there is none, \`flashback init\` with this location writes a new one and keeps the data`,
            },
          );
        }
        throw new RepositoryError('missing', `no Flashback repository at ${storage.location}`, {
          hint: 'check --repo / FLASHBACK_REPO / the config file, or create one with `flashback init`',
        });
      }
      throw notADirectory(storage, err) ?? err;
    }
    let config: RepositoryConfig;
    try {
      config = JSON.parse(bytes.toString('utf8')) as RepositoryConfig;
    } catch {
      throw new RepositoryError('corrupt', `${storage.location}/${CONFIG_KEY} is not valid JSON`, {
        hint: 'the repository identity file is damaged; restore it from a copy of the repository',
      });
    }
    if (
      config.format !== 'flashback-repository' ||
      typeof config.version !== 'number' ||
      typeof config.id !== 'string'
    ) {
      throw new RepositoryError(
        'corrupt',
        `${storage.location}/${CONFIG_KEY} is not a Flashback repository identity file`,
      );
    }
    if (config.version > REPOSITORY_FORMAT_VERSION) {
      throw new RepositoryError(
        'version',
        `the repository at ${storage.location} has format version ${config.version}; this Flashback reads up to ${REPOSITORY_FORMAT_VERSION}`,
        { hint: 'upgrade Flashback to work with this repository' },
      );
    }
    return new Repository(storage, config, options);
  }

  /**
   * Throws a RepositoryError when the repository opened is no longer at its
   * location: its `config.json` gone (the directory moved or deleted, its
   * volume unmounted: the mount point is an empty directory) or another
   * repository's. A long-running process (serve) checks before each job and
   * evaluation, so it neither reports an empty place as "no backups" nor
   * fills it with a repository's data and no identity.
   */
  async assertPresent(): Promise<void> {
    let id: unknown;
    try {
      id = (JSON.parse((await this.storage.read(CONFIG_KEY)).toString('utf8')) as { id?: unknown })
        .id;
    } catch (err) {
      if (!(err instanceof ObjectNotFoundError) && !(err instanceof SyntaxError)) throw err;
    }
    if (id === this.config.id) return;
    const hint =
      'mount or restore it, or point the configuration at where it is now (then restart serve)';
    if (typeof id === 'string') {
      throw new RepositoryError(
        'replaced',
        `the repository at ${this.storage.location} is another one now (id ${id}; ${this.config.id} was opened)`,
        { hint },
      );
    }
    throw new RepositoryError(
      'gone',
      `the repository at ${this.storage.location} is gone (its ${CONFIG_KEY} cannot be read): moved, deleted, or its volume unmounted`,
      { hint },
    );
  }
}

/** The first path segments of everything a repository holds (docs/REPOSITORY.md, "Layout"). */
const REPOSITORY_ENTRIES = new Set([
  CONFIG_KEY,
  'targets',
  'chunks',
  'snapshots',
  'locks',
  'serve',
  'runs',
  'changes',
]);

/**
 * The key of an object at the location that no repository holds, if any.
 * A repository that lost only its `config.json` holds nothing foreign, so
 * `init` may give it a new one; another tool's directory (or a home
 * directory) does, and must not become a repository: the two would delete
 * each other's files. Only the top level is looked at where the backend
 * can (Storage.topLevel); otherwise everything is listed until something
 * foreign is found.
 */
async function foreignObject(storage: Storage): Promise<string | undefined> {
  if (storage.topLevel !== undefined) {
    // (A file system's own lost+found, at the top of a volume mounted for
    // the repository, is no other tool's.)
    return (await storage.topLevel()).find((n) => !REPOSITORY_ENTRIES.has(n) && n !== 'lost+found');
  }
  for await (const obj of storage.list('')) {
    const first = obj.key.split('/', 1)[0]!;
    if (!REPOSITORY_ENTRIES.has(first)) return obj.key;
  }
  return undefined;
}

/** Whether the location holds any of a repository's data. */
async function holdsData(storage: Storage): Promise<boolean> {
  for (const prefix of ['snapshots/', 'chunks/', 'changes/']) {
    try {
      for await (const _ of storage.list(prefix)) return true;
    } catch {
      return false; // (unlistable: the plain "no repository" message stands)
    }
  }
  return false;
}

/** A repository path that is (or runs through) a file: named as such, not an internal error. */
function notADirectory(storage: Storage, err: unknown): RepositoryError | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code !== 'ENOTDIR' && code !== 'EEXIST') return undefined;
  return new RepositoryError(
    'missing',
    `${storage.location} is a file, not a repository directory`,
    { hint: 'check --repo / FLASHBACK_REPO / the config file', cause: err },
  );
}
