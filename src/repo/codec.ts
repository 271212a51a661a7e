/**
 * Chunk compression. Each stored chunk starts with a 5-byte header naming its
 * codec, so a repository can hold chunks of several codecs and a reader never
 * guesses. Chosen by measurement on COPY text (docs/BENCHMARKS.md), one core:
 * zstd level 1 compressed 337 MB/s and decompressed 660 MB/s at ratio 4.37;
 * brotli quality 1: 263 / 267 MB/s, ratio 3.89; gzip level 1: 103 / 253 MB/s,
 * ratio 3.53. zstd comes from zstd-napi (built on install); Node 22.15+ has it
 * built in, which reads the same format.
 */
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { Compressor, decompress as zstdDecompress } from 'zstd-napi';

/** Codecs a chunk may be stored with. The number is written in the chunk header. */
export const Codec = { none: 0, brotli: 1, zstd: 2 } as const;
export type CodecName = keyof typeof Codec;

/** The codec new chunks are written with. */
export const DEFAULT_CODEC: CodecName = 'zstd';

let zstd: Compressor | undefined;

/**
 * zstd level 1 with a hash table of 2^10 entries instead of level 1's 2^13.
 * A chunk is about 1 MiB and a segment a few: the small table stays in the
 * L1 cache, and on this data it finds more of the matches that count, not
 * fewer. Measured on one core (docs/BENCHMARKS.md): the bench's 309 MB of
 * COPY text compressed at 657-669 MB/s and ratio 4.53 against 581-583 MB/s
 * and 4.45, and decompressed at 1,812 MB/s against 1,414; 516 MB of
 * pgbench change-log segments at 596 MB/s and ratio 5.33 against 509 MB/s
 * and 5.01. The frames are ordinary zstd frames: any zstd decoder reads
 * them, and chunks written before read as they did.
 */
function zstdCompress(content: Buffer): Buffer {
  if (zstd === undefined) {
    zstd = new Compressor();
    zstd.setParameters({ compressionLevel: 1, hashLog: 10 });
  }
  return zstd.compress(content);
}

const MAGIC = Buffer.from('FBC1', 'latin1');
/** Size of the chunk header: magic (4) + codec (1). */
export const HEADER_SIZE = 5;

const brotliCompress = promisify(zlib.brotliCompress);
const brotliDecompress = promisify(zlib.brotliDecompress);

/**
 * Encodes chunk content: header + compressed bytes. Runs on libuv's thread
 * pool (async zlib), so compression overlaps with the main thread's parsing.
 */
export async function encodeChunk(
  content: Buffer,
  codec: CodecName = DEFAULT_CODEC,
): Promise<Buffer> {
  const header = Buffer.concat([MAGIC, Buffer.from([Codec[codec]])]);
  if (codec === 'none') return Buffer.concat([header, content]);
  // Synchronous on the calling thread (zstd-napi has no async call): about 3 ms per 1 MiB chunk.
  if (codec === 'zstd') return Buffer.concat([header, zstdCompress(content)]);
  const body = await brotliCompress(content, {
    params: {
      [zlib.constants.BROTLI_PARAM_QUALITY]: 1,
      [zlib.constants.BROTLI_PARAM_SIZE_HINT]: content.length,
    },
  });
  return Buffer.concat([header, body]);
}

/** Why a stored chunk could not be decoded. */
export class ChunkFormatError extends Error {}

/** Decodes a stored chunk back to its content; throws ChunkFormatError on a damaged header or body. */
export async function decodeChunk(stored: Buffer): Promise<{ content: Buffer; codec: CodecName }> {
  if (stored.length < HEADER_SIZE || !stored.subarray(0, 4).equals(MAGIC)) {
    throw new ChunkFormatError('not a Flashback chunk (bad header)');
  }
  const body = stored.subarray(HEADER_SIZE);
  switch (stored[4]) {
    case Codec.none:
      return { content: Buffer.from(body), codec: 'none' };
    case Codec.brotli:
      try {
        return { content: await brotliDecompress(body), codec: 'brotli' };
      } catch (err) {
        throw new ChunkFormatError(`brotli data is damaged (${(err as Error).message})`);
      }
    case Codec.zstd:
      try {
        return { content: zstdDecompress(body), codec: 'zstd' };
      } catch (err) {
        throw new ChunkFormatError(`zstd data is damaged (${(err as Error).message})`);
      }
    default:
      throw new ChunkFormatError(`unknown codec ${stored[4]}: written by a newer Flashback?`);
  }
}
