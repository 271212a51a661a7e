import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ExitCode, OperationError, UsageError } from '../errors.js';
import { checkOutFile, writeWhole } from './out-file.js';

const run = promisify(execFile);

describe('files written for the user (undo --out)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'flashback-out-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a missing directory or a directory as the file, before any work (exit 3)', async () => {
    const missing = path.join(dir, 'nope', 'undo.sql');
    const err = await checkOutFile(missing, '--out').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).exitCode).toBe(ExitCode.usage);
    expect((err as UsageError).message).toBe(
      `--out ${missing}: the directory ${path.join(dir, 'nope')} does not exist`,
    );
    await expect(checkOutFile(dir, '--out')).rejects.toThrow(`--out ${dir} is a directory`);
    await expect(checkOutFile(path.join(dir, 'fine.sql'), '--out')).resolves.toBeUndefined();
  });

  it('streams what is put, and a failure of the producer leaves the old file as it was and nothing else', async () => {
    const file = path.join(dir, 'undo.sql');
    await writeWhole(file, async (put) => {
      for (let i = 0; i < 1000; i++) await put(Buffer.alloc(1024, 'a'));
      await put('end\n');
    });
    expect((await readFile(file, 'utf8')).length).toBe(1024 * 1000 + 4);
    await writeFile(file, 'older script\n');
    const boom = new Error('the server went away');
    await expect(
      writeWhole(file, async (put) => {
        await put('BEGIN;\n');
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(await readFile(file, 'utf8')).toBe('older script\n');
    expect(await readdir(dir)).toEqual(['undo.sql']);
  });

  it('writes a new script readable by its owner only, keeps the mode of one it replaces, and writes a device as it is', async () => {
    const file = path.join(dir, 'undo.sql');
    await writeWhole(file, (put) => put('BEGIN;\n'));
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    await chmod(file, 0o640);
    await writeWhole(file, (put) => put('COMMIT;\n'));
    expect((await stat(file)).mode & 0o777).toBe(0o640);
    // /dev/null (as /dev/stdout or a pipe): no temporary file beside it, no rename over it.
    await checkOutFile('/dev/null', '--out');
    await writeWhole('/dev/null', (put) => put('BEGIN;\n'));
    expect((await stat('/dev/null')).isCharacterDevice()).toBe(true);
    expect((await readdir('/dev')).filter((f) => f.startsWith('.null.'))).toEqual([]);
  });

  it('a full disk is an error naming the file (exit 1), with nothing half-written left', async () => {
    // A real full disk: a small tmpfs (the tests run as root, as CI does).
    const small = path.join(dir, 'small');
    await run('mkdir', [small]);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', small]);
    try {
      const file = path.join(small, 'undo.sql');
      const err = await writeWhole(file, async (put) => {
        for (let i = 0; i < 200; i++) await put(Buffer.alloc(4096, 'x'));
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OperationError);
      expect((err as OperationError).exitCode).toBe(ExitCode.failed);
      expect((err as OperationError).message).toBe(`could not write ${file}: the disk is full`);
      expect(await readdir(small)).toEqual([]);
    } finally {
      await run('umount', [small]);
    }
  });
});
