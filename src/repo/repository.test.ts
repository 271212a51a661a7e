import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCode, RepositoryError } from '../errors.js';
import { LocalStorage } from '../storage/local.js';
import { MemoryStorage } from '../storage/memory.js';
import { REPOSITORY_FORMAT_VERSION, Repository } from './repository.js';

describe('repository identity', () => {
  it('initialises once and opens again with the same id', async () => {
    const s = new MemoryStorage();
    const created = await Repository.init(s);
    expect(created.config.version).toBe(REPOSITORY_FORMAT_VERSION);
    expect((await Repository.open(s)).config.id).toBe(created.config.id);
    await expect(Repository.init(s)).rejects.toMatchObject({ code: 'repository.exists' });
  });

  it('rejects a missing repository with exit code 6 and a hint', async () => {
    const err = await Repository.open(new MemoryStorage()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RepositoryError);
    expect(err).toMatchObject({ code: 'repository.missing', exitCode: ExitCode.repository });
    expect((err as RepositoryError).hint).toContain('flashback init');
  });

  it('says so when the data is there and only the identity file is missing; init then keeps the data', async () => {
    const s = new MemoryStorage();
    await s.write('snapshots/20261121-100000-aaaa.json', Buffer.from('{}'));
    const err = await Repository.open(s).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'repository.missing', exitCode: ExitCode.repository });
    expect((err as Error).message).toContain('holds Flashback data');
    expect((err as RepositoryError).hint).toContain('copy config.json back');
    await Repository.init(s);
    expect((await s.read('snapshots/20261121-100000-aaaa.json')).toString()).toBe('{}');
  });

  it('refuses to make a repository of a location holding anything else, and writes nothing there', async () => {
    const s = new MemoryStorage();
    // Another tool's files, one of them where a chunk would be.
    const chunkLike = `chunks/ab/ab${'0'.repeat(62)}`;
    await s.write(chunkLike, Buffer.from('not ours'));
    await s.write('notes/readme.txt', Buffer.from('hello'));
    const err = await Repository.init(s).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'repository.not-empty', exitCode: ExitCode.repository });
    expect((err as Error).message).toContain('holds notes/readme.txt');
    expect((err as RepositoryError).hint).toContain('empty directory');
    expect(await s.stat('config.json')).toBeUndefined();
    // An existing repository with a stray file in it is still "exists".
    const repo = new MemoryStorage();
    await Repository.init(repo);
    await repo.write('README', Buffer.from('x'));
    await expect(Repository.init(repo)).rejects.toMatchObject({ code: 'repository.exists' });
  });

  it("makes a repository at the top of a fresh volume, past its lost+found, and names another tool's folder there", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'fb-init-'));
    try {
      // (Unreadable to all but root on a real volume: it is not walked into.)
      await mkdir(path.join(dir, 'lost+found'));
      await writeFile(path.join(dir, 'lost+found', '#1234'), 'x');
      await Repository.init(new LocalStorage(dir));
      const other = await mkdtemp(path.join(os.tmpdir(), 'fb-init-'));
      await mkdir(path.join(other, 'pgbackrest'));
      await expect(Repository.init(new LocalStorage(other))).rejects.toThrow(/holds pgbackrest/);
      await rm(other, { recursive: true });
    } finally {
      await rm(dir, { recursive: true });
    }
  });

  it('tells a long-running process when its repository is gone or replaced', async () => {
    const s = new MemoryStorage();
    const repo = await Repository.init(s);
    await repo.assertPresent();
    const config = await s.read('config.json');
    await s.delete('config.json');
    await expect(repo.assertPresent()).rejects.toMatchObject({
      code: 'repository.gone',
      exitCode: ExitCode.repository,
    });
    await s.write('config.json', Buffer.from(config.toString().replace(repo.config.id, 'other')));
    await expect(repo.assertPresent()).rejects.toThrow(/is another one now \(id other;/);
  });

  it('rejects a newer format version, naming both versions', async () => {
    const s = new MemoryStorage();
    await s.write(
      'config.json',
      Buffer.from(
        JSON.stringify({ format: 'flashback-repository', version: 99, id: 'x', created: '' }),
      ),
    );
    await expect(Repository.open(s)).rejects.toThrow(
      /format version 99; this Flashback reads up to 1/,
    );
  });

  it('rejects a damaged identity file', async () => {
    const s = new MemoryStorage();
    await s.write('config.json', Buffer.from('{not json'));
    await expect(Repository.open(s)).rejects.toMatchObject({ code: 'repository.corrupt' });
    await s.write('config.json', Buffer.from('{"format":"something-else"}'));
    await expect(Repository.open(s)).rejects.toMatchObject({ code: 'repository.corrupt' });
  });
});
