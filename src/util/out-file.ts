/**
 * Files a command writes for the user to keep (`undo --out`): checked before
 * the long work that fills them, streamed (never held whole in memory), and
 * written whole or not at all: the bytes go to a temporary file beside the
 * destination, renamed over it only when everything is there, so a full
 * disk or an interruption never leaves a half script that looks complete.
 */
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { access, constants, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { OperationError, UsageError } from '../errors.js';

/**
 * Refuses, before any work, a destination that cannot be written: its
 * directory missing or read-only, or the path a directory. `flag` names the
 * option in the message (`--out`).
 */
export async function checkOutFile(file: string, flag: string): Promise<void> {
  const dir = path.dirname(path.resolve(file));
  const st = await stat(file).catch(() => undefined);
  if (st?.isDirectory() === true)
    throw new UsageError(`${flag} ${file} is a directory`, { hint: 'give a file name' });
  if (st !== undefined && !st.isFile()) return; // (a pipe or a device, written as it is)
  try {
    await access(dir, constants.W_OK);
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new UsageError(
      `${flag} ${file}: ${missing ? `the directory ${dir} does not exist` : `the directory ${dir} is not writable`}`,
      { hint: missing ? 'create it first, or give another path' : 'give a path you can write to' },
    );
  }
}

/** Appends to the file being written; resolves when the bytes are buffered within the stream's limit. */
export type Put = (bytes: string | Buffer) => Promise<void>;

/**
 * Writes `file` from what `produce` puts, whole or not at all (see above).
 * A failure to write (full disk) is an OperationError naming the file; an
 * error of `produce` is passed on as it is. Either way the temporary file is
 * removed and an older `file` is left as it was.
 */
export async function writeWhole(
  file: string,
  produce: (put: Put) => Promise<void>,
): Promise<void> {
  const st = await stat(file).catch(() => undefined);
  // A pipe or a device (/dev/stdout, >(gzip …)) is written as it is: it
  // cannot be replaced by a rename, and holds nothing to keep whole.
  const direct = st !== undefined && !st.isFile();
  const tmp = direct
    ? file
    : path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  // The rows of a production database: readable by the owner only, unless
  // the file it replaces was made readable to others.
  const ws = createWriteStream(tmp, {
    flags: 'w',
    mode: st === undefined || direct ? 0o600 : st.mode & 0o777,
  });
  let failure: Error | undefined;
  ws.on('error', (err) => {
    failure ??= err;
  });
  // Until `event` or an error: the listeners removed either way (one wait a write).
  const until = (event: string) =>
    new Promise<void>((resolve) => {
      const done = () => {
        ws.off(event, done).off('error', done);
        resolve();
      };
      ws.on(event, done).on('error', done);
    });
  const put: Put = async (bytes) => {
    if (failure !== undefined) throw failure;
    if (!ws.write(bytes)) await until('drain');
    if (failure !== undefined) throw failure;
  };
  try {
    await produce(put);
    const finished = until('finish');
    ws.end();
    await finished;
    if (failure !== undefined) throw failure;
    // (The descriptor is closed after 'finish': renamed only once it is.)
    if (!ws.closed) await once(ws, 'close');
    if (!direct) await rename(tmp, file);
  } catch (err) {
    // Closed before removed: a file still being opened would appear after the removal.
    const closed = ws.closed ? Promise.resolve() : until('close');
    ws.destroy();
    await closed;
    if (!direct) await rm(tmp, { force: true }).catch(() => {});
    if (err !== failure) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new OperationError(
      'out.write',
      `could not write ${file}: ${code === 'ENOSPC' || code === 'EDQUOT' ? 'the disk is full' : (err as Error).message}`,
      { hint: 'free space or give another path; nothing was written there', cause: err },
    );
  }
}
