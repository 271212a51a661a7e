/** Opening a storage backend from a repository location string. */
import { UsageError } from '../errors.js';
import { LocalStorage } from './local.js';
import type { Storage } from './storage.js';

/** Opens the backend a location names: a local path today; `s3://` is named and refused until supported. */
export function openStorage(location: string): Storage {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(location)?.[1]?.toLowerCase();
  if (scheme === undefined || scheme === 'file') {
    return new LocalStorage(scheme === 'file' ? new URL(location).pathname : location);
  }
  throw new UsageError(`unsupported repository location "${location}"`, {
    hint: `only local directories are supported in this version${scheme === 's3' ? ' (S3 support is planned)' : ''}`,
  });
}
