/**
 * The storage seam: bytes only, whole objects addressed by key.
 *
 * Keys are relative, '/'-separated paths of [A-Za-z0-9._-] segments
 * (`targets/prod.json`, `chunks/ab/ab12…`). Compression, hashing and
 * meaning live one layer up, in repo/. Every backend passes the shared
 * suite in test/storage/.
 */
import { ExitCode, FlashbackError } from '../errors.js';

/** Metadata of a stored object. */
export interface ObjectInfo {
  readonly key: string;
  readonly size: number;
}

/** A byte range to read: `length` bytes starting at `offset`. */
export interface ByteRange {
  readonly offset: number;
  readonly length: number;
}

/** A storage backend. */
export interface Storage {
  /** Where this storage is (a path or URL), for messages. Never contains credentials. */
  readonly location: string;

  /**
   * Reads an object, or a range of it (a range past the end returns the bytes
   * that exist). Throws ObjectNotFoundError if the key does not exist.
   * May be repeated. Transient I/O errors are thrown as-is and may be retried.
   */
  read(key: string, range?: ByteRange): Promise<Buffer>;

  /**
   * Writes an object atomically: a reader sees the old object or the whole new
   * one, never a part. Replaces an existing object. May be repeated.
   */
  write(key: string, data: Uint8Array): Promise<void>;

  /**
   * Writes an object atomically only if the key does not exist yet. Returns
   * true if written, false if an object was already there (left untouched).
   * This is the primitive for content-addressed objects and locks.
   */
  writeIfAbsent(key: string, data: Uint8Array): Promise<boolean>;

  /** Size of an object, or undefined if it does not exist. */
  stat(key: string): Promise<ObjectInfo | undefined>;

  /**
   * Every object whose key starts with `prefix`, in no particular order.
   * Objects written or deleted during the listing may or may not appear.
   */
  list(prefix: string): AsyncIterable<ObjectInfo>;

  /** Deletes an object. Deleting a missing key is not an error. May be repeated. */
  delete(key: string): Promise<void>;

  /**
   * The names at the top of the location: each object's first path
   * segment, and (where the backend has them) directories, even empty or
   * unreadable ones. Optional: `init` looks at these alone, where a backend
   * has them, so a volume's `lost+found` (unreadable to most users) is not
   * walked into; without it, `list('')` is walked.
   */
  topLevel?(): Promise<string[]>;
}

/** The object asked for does not exist. */
export class ObjectNotFoundError extends FlashbackError {
  readonly key: string;
  constructor(location: string, key: string) {
    super('storage.not-found', ExitCode.failed, `${key} not found in ${location}`);
    this.key = key;
  }
}

const KEY = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/** Throws unless `key` is a valid object key (no '..', no leading '/', no empty segment). */
export function assertKey(key: string): void {
  if (!KEY.test(key) || key.split('/').some((s) => s === '.' || s === '..')) {
    throw new Error(`invalid storage key: ${JSON.stringify(key)}`);
  }
}

/** Throws unless `prefix` is '' or a valid key prefix. */
export function assertPrefix(prefix: string): void {
  if (prefix !== '' && !/^[A-Za-z0-9._/-]*$/.test(prefix)) {
    throw new Error(`invalid storage prefix: ${JSON.stringify(prefix)}`);
  }
}
