/** In-memory storage, for unit tests. Passes the same suite as every backend. */
import {
  assertKey,
  assertPrefix,
  type ByteRange,
  type ObjectInfo,
  ObjectNotFoundError,
  type Storage,
} from './storage.js';

/** Storage held in a Map; copies on write and read so callers cannot alias stored bytes. */
export class MemoryStorage implements Storage {
  readonly location = 'memory:';
  private readonly objects = new Map<string, Buffer>();

  async read(key: string, range?: ByteRange): Promise<Buffer> {
    assertKey(key);
    const obj = this.objects.get(key);
    if (obj === undefined) throw new ObjectNotFoundError(this.location, key);
    const bytes =
      range === undefined ? obj : obj.subarray(range.offset, range.offset + range.length);
    return Buffer.from(bytes);
  }

  async write(key: string, data: Uint8Array): Promise<void> {
    assertKey(key);
    this.objects.set(key, Buffer.from(data));
  }

  async writeIfAbsent(key: string, data: Uint8Array): Promise<boolean> {
    assertKey(key);
    if (this.objects.has(key)) return false;
    this.objects.set(key, Buffer.from(data));
    return true;
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    assertKey(key);
    const obj = this.objects.get(key);
    return obj === undefined ? undefined : { key, size: obj.length };
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    assertPrefix(prefix);
    for (const [key, obj] of [...this.objects]) {
      if (key.startsWith(prefix)) yield { key, size: obj.length };
    }
  }

  async delete(key: string): Promise<void> {
    assertKey(key);
    this.objects.delete(key);
  }
}
