import { describe, expect, it } from 'vitest';
import { parseConfig } from '../config/load.js';
import { ExitCode, InterruptedError, RepositoryLockedError, UsageError } from '../errors.js';
import { buildOverlay, planPointInTime } from '../history/state.js';
import { type CaptureInfo, ChangeLog, type ChangeRecord, lsnValue } from '../repo/changelog.js';
import { ChunkStore } from '../repo/chunks.js';
import { listLocks, RepositoryLock } from '../repo/lock.js';
import { Repository } from '../repo/repository.js';
import { RunStore } from '../repo/runs.js';
import { type ChunkRef, type SnapshotManifest, SnapshotStore } from '../repo/snapshots.js';
import { MemoryStorage } from '../storage/memory.js';
import { checkRepository } from '../verify/check.js';
import { prune } from './prune.js';

/** A repository in memory with chunks of the given contents stored; returns their refs by name. */
async function setup(contents: Record<string, string>) {
  const storage = new MemoryStorage();
  const repo = await Repository.init(storage);
  const chunks = new ChunkStore(storage);
  const refs: Record<string, ChunkRef> = {};
  for (const [name, text] of Object.entries(contents)) {
    const r = await chunks.put(Buffer.from(text.repeat(200)));
    refs[name] = {
      id: r.id,
      rows: 200,
      size: text.length * 200,
      stored: r.storedSize,
      first: null,
      last: null,
    };
  }
  return { storage, repo, chunks, refs, snapshots: new SnapshotStore(storage) };
}

function manifest(
  id: string,
  target: string,
  startedAt: string,
  chunks: ChunkRef[],
): SnapshotManifest {
  return {
    format: 'flashback-snapshot',
    version: 1,
    id,
    target,
    database: 'app',
    encoding: 'UTF8',
    collate: 'C',
    ctype: 'C',
    systemIdentifier: '1',
    host: 'h',
    serverVersion: '17.10',
    serverVersionNum: 170010,
    lsn: '0/1',
    startedAt,
    finishedAt: startedAt,
    schema: {},
    tables: [
      {
        schema: 'public',
        name: 't',
        columns: ['id'],
        key: ['id'],
        keyKind: 'primary',
        boundaryBits: 10,
        rows: 200 * chunks.length,
        bytes: chunks.reduce((n, c) => n + c.size, 0),
        storedBytes: chunks.reduce((n, c) => n + c.stored, 0),
        chunks,
      },
    ],
    totals: {
      tables: 1,
      rows: 200 * chunks.length,
      bytes: 0,
      storedBytes: chunks.reduce((n, c) => n + c.stored, 0),
      newChunks: 0,
      newBytes: 0,
    },
  };
}

async function chunkIds(chunks: ChunkStore): Promise<string[]> {
  const out: string[] = [];
  for await (const c of chunks.list()) out.push(c.id);
  return out.sort();
}

const config = (yaml: string) => parseConfig(yaml, undefined);

describe('prune', () => {
  it('removes the manifests, then exactly the unreferenced chunks; a dry run predicts it and deletes nothing', async () => {
    const { storage, repo, chunks, refs, snapshots } = await setup({
      shared: 'shared row\n',
      b1: 'one\n',
      b2: 'two\n',
      b3: 'three\n',
      staging: 'staging row\n',
      dead: 'from a backup that died before its manifest\n',
    });
    await snapshots.commit(
      manifest('20261101-000000-0001', 'prod', '2026-11-01T00:00:00.000Z', [
        refs.shared!,
        refs.b1!,
      ]),
    );
    await snapshots.commit(
      manifest('20261102-000000-0002', 'prod', '2026-11-02T00:00:00.000Z', [
        refs.shared!,
        refs.b2!,
      ]),
    );
    await snapshots.commit(
      manifest('20261103-000000-0003', 'prod', '2026-11-03T00:00:00.000Z', [
        refs.shared!,
        refs.b3!,
      ]),
    );
    // Another target, under the same top-level policy: its newest is its own "last 1".
    await snapshots.commit(
      manifest('20261101-120000-0004', 'staging', '2026-11-01T12:00:00.000Z', [
        refs.shared!,
        refs.staging!,
      ]),
    );
    const cfg = config('retention:\n  keep_last: 1\n');
    const freed = refs.b1!.stored + refs.b2!.stored + refs.dead!.stored;

    const before = await chunkIds(chunks);
    const dry = await prune({ repo, config: cfg, dryRun: true });
    expect(dry.plan.remove).toEqual(['20261101-000000-0001', '20261102-000000-0002']);
    expect(dry.plan.targets.map((t) => t.target)).toEqual(['prod', 'staging']);
    expect(dry.plan.targets[0]!.snapshots.map((s) => [s.id, s.keep, s.reasons])).toEqual([
      ['20261101-000000-0001', false, []],
      ['20261102-000000-0002', false, []],
      ['20261103-000000-0003', true, ['last 1']],
    ]);
    expect(dry).toMatchObject({
      dryRun: true,
      snapshotsRemoved: 2,
      chunksRemoved: 3,
      chunksKept: 3,
      bytesFreed: freed,
    });
    expect(await chunkIds(chunks)).toEqual(before);
    expect((await snapshots.ids()).length).toBe(4);

    const real = await prune({ repo, config: cfg });
    expect(real).toMatchObject({
      dryRun: false,
      snapshotsRemoved: 2,
      chunksRemoved: 3,
      chunksKept: 3,
      bytesFreed: freed,
    });
    expect(await snapshots.ids()).toEqual(['20261101-120000-0004', '20261103-000000-0003']);
    expect(await chunkIds(chunks)).toEqual([refs.shared!.id, refs.b3!.id, refs.staging!.id].sort());
    expect(await listLocks(storage)).toEqual([]);

    // Nothing left to do: a second run removes nothing.
    expect(await prune({ repo, config: cfg })).toMatchObject({
      snapshotsRemoved: 0,
      chunksRemoved: 0,
      bytesFreed: 0,
    });
  });

  it('stops with a repository error (exit 6) where the repository refuses deletes, and goes on once it allows them', async () => {
    const { storage, repo, refs, snapshots } = await setup({ a: 'a\n', b: 'b\n' });
    await snapshots.commit(
      manifest('20261101-000000-0001', 'prod', '2026-11-01T00:00:00.000Z', [refs.a!]),
    );
    await snapshots.commit(
      manifest('20261102-000000-0002', 'prod', '2026-11-02T00:00:00.000Z', [refs.b!]),
    );
    // chunks/ mounted read-only (the lock's directory is writable).
    const readOnly = Object.assign(Object.create(storage) as MemoryStorage, {
      delete: async (key: string) => {
        if (key.startsWith('chunks/')) {
          throw Object.assign(new Error(`EROFS: read-only file system, unlink '${key}'`), {
            code: 'EROFS',
          });
        }
        return storage.delete(key);
      },
    });
    const cfg = config('retention:\n  keep_last: 1\n');
    const err = await prune({ repo: await Repository.open(readOnly), config: cfg }).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'repository.read-only', exitCode: ExitCode.repository });
    expect((err as Error).message).toContain('prune cannot delete from the repository');
    expect(await snapshots.ids()).toEqual(['20261102-000000-0002']);
    expect(await listLocks(storage)).toEqual([]);
    // Writable again: the chunk no snapshot uses goes.
    expect(await prune({ repo, config: cfg })).toMatchObject({ chunksRemoved: 1 });
  });

  it('keeps the newest snapshot whose latest verification passed', async () => {
    const { repo, refs, snapshots, storage } = await setup({ a: 'a\n', b: 'b\n', c: 'c\n' });
    await snapshots.commit(
      manifest('20261101-000000-0001', 'prod', '2026-11-01T00:00:00.000Z', [refs.a!]),
    );
    await snapshots.commit(
      manifest('20261102-000000-0002', 'prod', '2026-11-02T00:00:00.000Z', [refs.b!]),
    );
    await snapshots.commit(
      manifest('20261103-000000-0003', 'prod', '2026-11-03T00:00:00.000Z', [refs.c!]),
    );
    const runs = new RunStore(storage);
    const verify = (snapshot: string, ok: boolean, at: string) =>
      runs.record({
        kind: 'verify',
        target: 'prod',
        snapshot,
        ok,
        trigger: 'command',
        startedAt: at,
        finishedAt: at,
        seconds: 1,
        // (A failure is a verdict when it found something: a difference.)
        ...(ok ? {} : { problems: [{ table: 'public.t', message: 'rows differ' }] }),
      });
    await verify('20261101-000000-0001', true, '2026-11-04T00:00:00.000Z');
    await verify('20261102-000000-0002', true, '2026-11-04T01:00:00.000Z');
    await verify('20261102-000000-0002', false, '2026-11-05T00:00:00.000Z'); // its latest found a difference
    const r = await prune({ repo, config: config('retention:\n  keep_last: 1\n') });
    expect(r.plan.remove).toEqual(['20261102-000000-0002']);
    expect(r.plan.targets[0]!.snapshots[0]!.reasons).toEqual(['newest verified']);
    expect(await snapshots.ids()).toEqual(['20261101-000000-0001', '20261103-000000-0003']);
  });

  it('removes nothing of a target without a policy, and refuses when the named target or every target has none', async () => {
    const { repo, refs, snapshots, chunks } = await setup({
      a: 'a\n',
      b: 'b\n',
      c: 'c\n',
      d: 'd\n',
    });
    await snapshots.commit(
      manifest('20261101-000000-0001', 'prod', '2026-11-01T00:00:00.000Z', [refs.a!]),
    );
    await snapshots.commit(
      manifest('20261102-000000-0002', 'prod', '2026-11-02T00:00:00.000Z', [refs.b!]),
    );
    await snapshots.commit(
      manifest('20261101-000000-0003', 'staging', '2026-11-01T00:00:00.000Z', [refs.c!]),
    );
    await snapshots.commit(
      manifest('20261102-000000-0004', 'staging', '2026-11-02T00:00:00.000Z', [refs.d!]),
    );
    const targets =
      'targets:\n  prod:\n    database: app\n    retention:\n      keep_last: 1\n  staging:\n    database: app2\n';

    const refused = async (cfg: string, target?: string) => {
      const err = await prune({ repo, config: config(cfg), target }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UsageError);
      expect((err as UsageError).exitCode).toBe(ExitCode.usage);
      return `${(err as Error).message} | ${(err as UsageError).hint}`;
    };
    expect(await refused(targets, 'staging')).toMatch(
      /^no retention policy for target "staging": prune removes nothing without one \| set retention .*docs\/CONFIG\.md$/,
    );
    expect(await refused('retention: {}\n')).toMatch(
      /^no retention policy configured \(targets with snapshots: prod, staging\): prune removes nothing without one \| set retention /,
    );
    expect(await refused(targets, 'nosuch')).toContain('target "nosuch" has no snapshots');
    expect(await refused('retention:\n  keep_daily: 0\n')).toContain('keeps nothing');
    expect((await snapshots.ids()).length).toBe(4);
    expect((await chunkIds(chunks)).length).toBe(4);

    const r = await prune({ repo, config: config(targets) });
    expect(r.plan.remove).toEqual(['20261101-000000-0001']);
    const staging = r.plan.targets.find((t) => t.target === 'staging')!;
    expect(staging.policy).toBeNull();
    expect(staging.snapshots.map((s) => s.reasons)).toEqual([
      ['no retention policy'],
      ['no retention policy'],
    ]);
    expect((await snapshots.ids()).length).toBe(3);
  });

  it('refuses while another process holds a lock; a dry run runs beside a shared one', async () => {
    const { repo, refs, snapshots, storage } = await setup({ a: 'a\n', b: 'b\n' });
    await snapshots.commit(
      manifest('20261101-000000-0001', 'prod', '2026-11-01T00:00:00.000Z', [refs.a!]),
    );
    await snapshots.commit(
      manifest('20261102-000000-0002', 'prod', '2026-11-02T00:00:00.000Z', [refs.b!]),
    );
    const cfg = config('retention:\n  keep_last: 1\n');
    const backup = await RepositoryLock.acquire(storage, {
      exclusive: false,
      command: 'backup prod',
    });
    try {
      const err = await prune({ repo, config: cfg }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RepositoryLockedError);
      expect((err as Error).message).toContain('locked by "backup prod"');
      expect((await prune({ repo, config: cfg, dryRun: true })).chunksRemoved).toBe(1);
      expect((await snapshots.ids()).length).toBe(2);
    } finally {
      await backup.release();
    }
    expect(await listLocks(storage)).toEqual([]);
  });

  it('stops between deletes when interrupted, leaving the lock released', async () => {
    const { repo, refs, snapshots, storage } = await setup({ a: 'a\n', b: 'b\n' });
    await snapshots.commit(
      manifest('20261101-000000-0001', 'prod', '2026-11-01T00:00:00.000Z', [refs.a!]),
    );
    await snapshots.commit(
      manifest('20261102-000000-0002', 'prod', '2026-11-02T00:00:00.000Z', [refs.b!]),
    );
    const controller = new AbortController();
    controller.abort();
    const err = await prune({
      repo,
      config: config('retention:\n  keep_last: 1\n'),
      signal: controller.signal,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InterruptedError);
    expect((await snapshots.ids()).length).toBe(2);
    expect(await listLocks(storage)).toEqual([]);
  });

  describe('change logs', () => {
    const rel: ChangeRecord = ['R', 1, 'public', 't', 'd', [['id', 23, -1, true]]];
    const tx = (xid: number, at: number, id: string): ChangeRecord[] => [
      rel,
      ['B', xid, `0/${at.toString(16)}`, '2026-11-21T10:00:00.000000Z'],
      ['I', 1, [id]],
      ['C', `0/${at.toString(16)}`, `0/${(at + 8).toString(16)}`, '2026-11-21T10:00:00.000000Z'],
    ];
    /** A log of four one-row transactions (one per segment), snapshots at the given LSNs. */
    async function withLog(snapshotLsns: string[], startLsn = '0/50') {
      const s = await setup({ a: 'a\n' });
      const log = new ChangeLog(s.storage, 'prod');
      const info: CaptureInfo = {
        format: 'flashback-capture',
        version: 1,
        target: 'prod',
        slot: 'flashback_prod',
        publication: 'flashback_prod',
        systemIdentifier: '1',
        database: 'app',
        startLsn,
        created: '2026-11-21T09:00:00.000Z',
      };
      await log.writeInfo(info);
      for (let i = 1; i <= 4; i++) {
        await log.writeSegment(i, lsnValue(`0/${(i * 0x100 + 8).toString(16)}`), [
          ...tx(i, i * 0x100, String(i)),
          ...(i === 4 ? [['H', '0/500', '2026-11-21T10:00:09.000000Z'] as ChangeRecord] : []),
        ]);
      }
      for (const [i, lsn] of snapshotLsns.entries()) {
        await s.snapshots.commit({
          ...manifest(
            `2026110${i + 1}-000000-000${i + 1}`,
            'prod',
            `2026-11-0${i + 1}T00:00:00.000Z`,
            [s.refs.a!],
          ),
          lsn,
        });
      }
      return { ...s, log };
    }
    const keys = async (log: ChangeLog) => (await log.segments()).map((x) => x.seq);

    it('cuts the log back to the oldest snapshot kept; moments after it rebuild as before', async () => {
      const { repo, log, storage } = await withLog(['0/150', '0/350']);
      const before = await buildOverlay(
        await planPointInTime(repo, 'prod', { kind: 'lsn', lsn: '0/500' }),
      );
      const dry = await prune({
        repo,
        config: config('retention:\n  keep_last: 1\n'),
        dryRun: true,
      });
      expect(dry.logs).toEqual([
        {
          target: 'prod',
          log: 1,
          emptied: false,
          fromLsn: '0/50',
          toLsn: '0/350',
          segmentsRemoved: 2,
          schemaRecordsRemoved: 0,
          bytesFreed: expect.any(Number),
        },
      ]);
      expect(await keys(log)).toEqual([1, 2, 3, 4]);

      const r = await prune({ repo, config: config('retention:\n  keep_last: 1\n') });
      expect(r.logs.map((l) => l.segmentsRemoved)).toEqual([2]);
      // Segment 3 ends in a transaction committed before the snapshot: it is
      // kept (its neighbour could be mid-transaction), the two before it go.
      expect(await keys(log)).toEqual([3, 4]);
      const info = (await log.info())!;
      expect(info).toMatchObject({
        version: 2,
        startLsn: '0/350',
        firstSegment: 3,
        originLsn: '0/50',
      });
      const after = await buildOverlay(
        await planPointInTime(repo, 'prod', { kind: 'lsn', lsn: '0/500' }),
      );
      expect([...after.tables.get('public.t')!.byKey]).toEqual([
        ...before.tables.get('public.t')!.byKey,
      ]);
      expect([...after.tables.get('public.t')!.byKey.keys()]).toEqual(['4']);
      // No segment is reported missing: the gap before segment 3 is a prune's.
      const report = await checkRepository({ repo, readDataPercent: 100 });
      expect(report.findings.filter((f) => f.kind.startsWith('changelog'))).toEqual([]);
      // Nothing more to cut.
      expect((await prune({ repo, config: config('retention:\n  keep_last: 1\n') })).logs).toEqual(
        [],
      );
      void storage;
    });

    it('of two logs, empties the older once every snapshot kept is of the newer, and cuts the newer', async () => {
      // Log 1 (snapshots 1 and 2); its slot lost, log 2 begun on 2026-11-10
      // at 0/600 (log 1 ended at 0/508), snapshot 3 taken under it at 0/750.
      const { repo, log, storage, snapshots, refs } = await withLog(['0/150', '0/350']);
      const second = new ChangeLog(storage, 'prod', 2);
      await second.writeInfo({
        ...(await log.info())!,
        startLsn: '0/600',
        created: '2026-11-10T00:00:00.000Z',
        log: 2,
        previousEnd: '0/508',
      });
      for (let i = 6; i <= 8; i++) {
        await second.writeSegment(i - 5, lsnValue(`0/${(i * 0x100 + 8).toString(16)}`), [
          ...tx(i, i * 0x100, `x${i}`),
        ]);
      }
      await snapshots.commit({
        ...manifest('20261111-000000-0003', 'prod', '2026-11-11T00:00:00.000Z', [refs.a!]),
        lsn: '0/750',
      });
      // A position after log 1's end and before log 2's start is in neither.
      await expect(planPointInTime(repo, 'prod', { kind: 'lsn', lsn: '0/550' })).rejects.toThrow(
        'LSN 0/550 is in no change log of "prod": log 1 ends at 0/508 and log 2 begins at 0/600',
      );
      const policy = config('retention:\n  keep_last: 1\n');
      const dry = await prune({ repo, config: policy, dryRun: true });
      expect(dry.logs.map((l) => [l.log, l.emptied, l.segmentsRemoved, l.toLsn])).toEqual([
        [1, true, 4, '0/508'],
        [2, false, 1, '0/750'],
      ]);
      expect(await keys(log)).toEqual([1, 2, 3, 4]);

      await prune({ repo, config: policy });
      expect(await keys(log)).toEqual([]);
      expect(await keys(second)).toEqual([2, 3]);
      // Log 1's description stays (log 2 is found after it), saying nothing is kept.
      expect(await log.info()).toMatchObject({ version: 2, firstSegment: 5, startLsn: '0/508' });
      expect((await second.info())!.firstSegment).toBe(2);
      const report = await checkRepository({ repo, readDataPercent: 100 });
      expect(report.findings.filter((f) => f.kind.startsWith('changelog'))).toEqual([]);
      // Log 2's moments rebuild from snapshot 3.
      const overlay = await buildOverlay(
        await planPointInTime(repo, 'prod', { kind: 'lsn', lsn: '0/808' }),
      );
      expect([...overlay.tables.get('public.t')!.byKey.keys()]).toEqual(['x8']);
      expect((await prune({ repo, config: policy })).logs).toEqual([]);
    });

    it('keeps the whole log when no snapshot joins it, and for a target without a policy', async () => {
      const { repo, log } = await withLog(['0/40', '0/45'], '0/50');
      const r = await prune({ repo, config: config('retention:\n  keep_last: 1\n') });
      expect(r.logs).toEqual([]);
      expect(await keys(log)).toEqual([1, 2, 3, 4]);

      const other = await withLog(['0/150', '0/350']);
      await other.snapshots.commit(
        manifest('20261105-000000-0005', 'other', '2026-11-05T00:00:00.000Z', [other.refs.a!]),
      );
      const none = await prune({
        repo: other.repo,
        config: config(
          'targets:\n  prod:\n    url: postgres://x/y\n  other:\n    url: postgres://x/z\n    retention:\n      keep_last: 1\n',
        ),
      });
      expect(none.logs).toEqual([]);
      expect(await keys(other.log)).toEqual([1, 2, 3, 4]);
    });

    it('a prune stopped after moving the start leaves a readable log; the next one removes the rest', async () => {
      const { repo, log, storage } = await withLog(['0/150', '0/350']);
      await new SnapshotStore(storage).delete('20261101-000000-0001');
      // What a prune killed right after writing the new start leaves.
      const info = (await log.info())!;
      await log.writeInfo({
        ...info,
        version: 2,
        startLsn: '0/350',
        firstSegment: 3,
        originLsn: '0/50',
      });
      const report = await checkRepository({ repo });
      expect(report.findings.filter((f) => f.kind.startsWith('changelog'))).toEqual([]);
      const overlay = await buildOverlay(
        await planPointInTime(repo, 'prod', { kind: 'lsn', lsn: '0/500' }),
      );
      expect([...overlay.tables.get('public.t')!.byKey.keys()]).toEqual(['4']);
      const r = await prune({ repo, config: config('retention:\n  keep_last: 1\n') });
      expect(r.logs.map((l) => l.segmentsRemoved)).toEqual([2]);
      expect(await keys(log)).toEqual([3, 4]);
      // A missing segment after the first kept one is still damage.
      await log.remove((await log.segments())[0]!.key);
      const damaged = await checkRepository({ repo });
      expect(damaged.findings.map((f) => f.kind)).toContain('changelog-missing');
    });
  });
});
