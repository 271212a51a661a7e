/** `flashback init`: write a commented starter config and create the repository. */
import { access, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { configFilePath } from '../../config/load.js';
import { starterConfig } from '../../config/starter.js';
import { ExitCode, RepositoryError, UsageError } from '../../errors.js';
import { Repository } from '../../repo/repository.js';
import { openStorage } from '../../storage/open.js';
import type { Storage } from '../../storage/storage.js';
import type { CliContext } from '../context.js';

export function registerInit(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('init')
    .description('write a commented flashback.yaml and create the repository it names')
    .option('--force', 'overwrite an existing configuration file')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
The file goes to --config PATH, FLASHBACK_CONFIG, or ./flashback.yaml.
The repository is --repo PATH, FLASHBACK_REPO, or ./flashback-repo beside the file.
An existing repository at that location is kept as it is; a location that
holds other files is refused (exit 6): choose an empty or new directory.
When the file exists already, it is kept (--force overwrites it with the
starter) and only the repository it names is created: a hand-written or
deployed configuration needs nothing else.`,
    )
    .action(async (opts: { force?: boolean }, self: Command) => {
      process.exitCode = await init(context(self), opts.force === true);
    });
}

/**
 * Creates (or reuses) the repository an existing configuration names, and
 * leaves the file as it is. A configuration written by hand or deployed
 * with the machine would otherwise have no way to get its repository but
 * overwriting the file.
 */
async function initRepositoryOnly(ctx: CliContext, file: string): Promise<number> {
  const location = await ctx.repositoryLocation();
  if (location === undefined) {
    throw new UsageError(`${file} exists and names no repository`, {
      hint: 'set repository in it (or give --repo PATH), or pass --force to overwrite it with the starter',
    });
  }
  const storage = openStorage(location);
  const { repo, created } = await createOrOpen(storage);
  if (ctx.json) {
    ctx.printJson({
      config: file,
      configWritten: false,
      repository: storage.location,
      repositoryId: repo.config.id,
      created,
    });
  } else {
    ctx.out(`kept ${file} (it exists; --force overwrites it with the starter)\n`);
    ctx.out(
      `${created ? 'created' : 'using existing'} repository ${storage.location} (id ${repo.config.id})\n`,
    );
  }
  return ExitCode.ok;
}

/** The repository at `storage`, created unless one exists there. */
async function createOrOpen(storage: Storage): Promise<{ repo: Repository; created: boolean }> {
  try {
    return { repo: await Repository.init(storage), created: true };
  } catch (err) {
    if (!(err instanceof RepositoryError && err.code === 'repository.exists')) throw err;
    return { repo: await Repository.open(storage), created: false };
  }
}

/** Writes the starter config and creates (or reuses) the repository; returns the exit code. */
export async function init(ctx: CliContext, force: boolean): Promise<number> {
  const { file } = configFilePath({
    configPath: ctx.options.config,
    env: ctx.env,
    cwd: ctx.io.cwd,
  });
  const exists = await access(file).then(
    () => true,
    () => false,
  );
  if (exists && !force) return initRepositoryOnly(ctx, file);
  const repoGiven = ctx.options.repo ?? (ctx.env.FLASHBACK_REPO || undefined);
  const repoInFile = repoGiven ?? './flashback-repo';
  const location = /^[a-z][a-z0-9+.-]*:\/\//i.test(repoInFile)
    ? repoInFile
    : path.resolve(repoGiven === undefined ? path.dirname(file) : ctx.io.cwd, repoInFile);
  const storage = openStorage(location);
  const { repo, created } = await createOrOpen(storage);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, starterConfig(repoGiven === undefined ? repoInFile : location));
  if (ctx.json) {
    ctx.printJson({
      config: file,
      configWritten: true,
      repository: storage.location,
      repositoryId: repo.config.id,
      created,
    });
  } else {
    ctx.out(`wrote ${file}\n`);
    ctx.out(
      `${created ? 'created' : 'using existing'} repository ${storage.location} (id ${repo.config.id})\n`,
    );
    ctx.out(
      'next: declare your targets in the file, then run `flashback targets` and `flashback doctor`\n',
    );
  }
  return ExitCode.ok;
}
