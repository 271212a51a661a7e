import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../storage/memory.js';
import { ChunkError, ChunkStore, chunkId, chunkKey } from './chunks.js';
import { decodeChunk, encodeChunk } from './codec.js';

const content = Buffer.from(
  Array.from({ length: 5000 }, (_, i) => `${i}\trow ${i}\t\\N\n`).join(''),
);

describe('chunk codecs', () => {
  it('round-trips every codec and records it in the header', async () => {
    for (const codec of ['none', 'brotli', 'zstd'] as const) {
      const stored = await encodeChunk(content, codec);
      expect(stored.subarray(0, 4).toString('latin1')).toBe('FBC1');
      const decoded = await decodeChunk(stored);
      expect(decoded.codec).toBe(codec);
      expect(decoded.content.equals(content)).toBe(true);
      if (codec !== 'none') expect(stored.length).toBeLessThan(content.length / 3);
    }
  });

  it('rejects a bad header and an unknown codec', async () => {
    await expect(decodeChunk(Buffer.from('nope'))).rejects.toThrow(/bad header/);
    const stored = await encodeChunk(content, 'zstd');
    stored[4] = 9;
    await expect(decodeChunk(stored)).rejects.toThrow(/unknown codec 9/);
  });
});

describe('chunk store', () => {
  it('stores content once, by its hash, and reads it back verified', async () => {
    const s = new MemoryStorage();
    const store = new ChunkStore(s);
    const first = await store.put(content);
    expect(first).toMatchObject({ id: chunkId(content), isNew: true });
    const again = await store.put(Buffer.from(content));
    expect(again).toEqual({ id: first.id, storedSize: first.storedSize, isNew: false });
    expect((await store.get(first.id)).equals(content)).toBe(true);
    expect(await s.stat(chunkKey(first.id))).toEqual({
      key: chunkKey(first.id),
      size: first.storedSize,
    });
  });

  it('never returns a damaged or missing chunk', async () => {
    const s = new MemoryStorage();
    const store = new ChunkStore(s);
    const { id } = await store.put(content, { codec: 'none' });
    const stored = await s.read(chunkKey(id));
    stored[100] = stored[100]! ^ 0x01; // one flipped bit in the data
    await s.write(chunkKey(id), stored);
    await expect(store.get(id)).rejects.toThrow(ChunkError);
    await expect(store.get(id)).rejects.toThrow(`chunk ${id} is damaged: its content hashes to`);
    const zid = (await store.put(Buffer.from('other content\n'), { codec: 'zstd' })).id;
    const z = await s.read(chunkKey(zid));
    await s.write(chunkKey(zid), z.subarray(0, z.length - 3)); // truncated
    await expect(store.get(zid)).rejects.toThrow(/is damaged/);
    await expect(store.get('0'.repeat(64))).rejects.toThrow(/is missing/);
  });
});
