import { closeSync, openSync, readSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { OperationError } from '../errors.js';
import { createTempFile, writeTemp } from './temp-file.js';

describe('temporary files', () => {
  it('writes at a position, and reads back', () => {
    const fd = createTempFile();
    try {
      writeTemp(fd, Buffer.from('xxhello'), 2, 7, 10);
      const back = Buffer.alloc(5);
      expect(readSync(fd, back, 0, 5, 10)).toBe(5);
      expect(back.toString()).toBe('hello');
    } finally {
      closeSync(fd);
    }
  });

  it('a full disk is an error naming the directory and what to do (exit 1), not a bug', () => {
    // Linux's /dev/full fails every write with ENOSPC.
    const fd = openSync('/dev/full', 'w');
    try {
      let err: unknown;
      try {
        writeTemp(fd, Buffer.alloc(4096), 0, 4096, 0);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(OperationError);
      expect((err as OperationError).code).toBe('temp.full');
      expect((err as OperationError).exitCode).toBe(1);
      expect((err as OperationError).message).toMatch(/^the temporary directory .* is full/);
      expect((err as OperationError).hint).toContain('TMPDIR');
    } finally {
      closeSync(fd);
    }
    // Any other failure is passed on as it is.
    const closed = createTempFile();
    closeSync(closed);
    expect(() => writeTemp(closed, Buffer.alloc(8), 0, 8, 0)).toThrow(/EBADF/);
  });
});
