import { buildOverlay, closeOverlay, planPointInTime } from '../src/history/state.js';
import { Repository } from '../src/repo/repository.js';
import { SnapshotStore } from '../src/repo/snapshots.js';
import { LocalStorage } from '../src/storage/local.js';

const dir = process.argv[2]!;
const storage = new LocalStorage(dir);
const repo = await Repository.open(storage);
const all = await new SnapshotStore(storage).all('bench');
const base = all[0]!;
for (let i = 0; i < Number(process.argv[3] ?? 2); i++) {
  const t = performance.now();
  const p0 = await planPointInTime(repo, 'bench', { kind: 'lsn', lsn: '0/1' }, base.id).catch(
    () => undefined,
  );
  const { ChangeLog } = await import('../src/repo/changelog.js');
  const segs = await (p0?.log ?? new ChangeLog(storage, 'bench')).segments();
  const end = segs.at(-1)!.committed;
  const lsn = `${(end >> 32n).toString(16).toUpperCase()}/${(end & 0xffffffffn).toString(16).toUpperCase()}`;
  const plan = await planPointInTime(repo, 'bench', { kind: 'lsn', lsn }, base.id);
  const ov = await buildOverlay(plan);
  console.log(
    'changes',
    ov.changes,
    's',
    ((performance.now() - t) / 1000).toFixed(2),
    'rate',
    Math.round(ov.changes / ((performance.now() - t) / 1000)),
  );
  closeOverlay(ov);
}
