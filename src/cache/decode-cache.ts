/**
 * Decoding through the persistent cache: a decoded image is keyed by the sha256 of the file's bytes
 * (not its path or mtime), the size, the resize mode and the decoder (sharp/libvips versions and
 * finetune's pipeline version), so an edited file, another size or mode never hits a stale entry.
 *
 * Hashing a file means reading it; a memo of (path, size, mtime, ctime, inode) → digest skips that
 * for files that have not changed since the last run. The content still decides: any write to a
 * file changes its ctime (which cannot be set back by hand), and then the file is hashed again.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { fileDigest } from '../io/digest.js';
import { decodeAll, type DecodeAllOptions, type DecodeAllResult } from '../data/decode.js';
import { writeFileAtomic } from '../io/atomic.js';
import { DiskCache, FILE_DIGEST_MEMO } from './disk-cache.js';

/** Bump when decode.ts's pipeline changes what it produces. */
export const DECODE_PIPELINE_VERSION = 1;
/** Memo rows kept at most (the least recently seen go first). */
const MEMO_LIMIT = 200_000;

type MemoRow = [size: number, mtimeMs: number, ctimeMs: number, ino: number, sha256: string, seen: number];

/** The file-digest memo of one cache folder, loaded once, saved (merged with what other runs saved) by `save`. */
export class FileDigests {
  private rows = new Map<string, MemoRow>();
  private changed = false;
  private readonly file: string;

  private constructor(cacheDir: string) {
    this.file = path.join(cacheDir, FILE_DIGEST_MEMO);
  }

  static async load(cacheDir: string): Promise<FileDigests> {
    const memo = new FileDigests(cacheDir);
    memo.rows = await readMemo(memo.file);
    return memo;
  }

  /** sha256 (hex) of the file's bytes, from the memo when the file is unchanged; undefined when it cannot be read. */
  async digest(file: string): Promise<string | undefined> {
    const abs = path.resolve(file);
    const st = await fs.stat(abs).catch(() => undefined);
    if (!st?.isFile()) return undefined;
    const row = this.rows.get(abs);
    const now = Date.now();
    if (row && row[0] === st.size && row[1] === st.mtimeMs && row[2] === st.ctimeMs && row[3] === st.ino) {
      row[5] = now;
      this.changed = true;
      return row[4];
    }
    const sha = await fileDigest(abs).catch(() => undefined);
    if (sha === undefined) return undefined;
    this.rows.set(abs, [st.size, st.mtimeMs, st.ctimeMs, st.ino, sha, now]);
    this.changed = true;
    return sha;
  }

  /** Writes the memo (atomically), merged with rows another run may have saved meanwhile. */
  async save(): Promise<void> {
    if (!this.changed) return;
    const merged = await readMemo(this.file);
    for (const [file, row] of this.rows) {
      const other = merged.get(file);
      if (!other || other[5] <= row[5]) merged.set(file, row);
    }
    const kept = [...merged].sort((a, b) => b[1][5] - a[1][5]).slice(0, MEMO_LIMIT);
    try {
      await fs.mkdir(path.dirname(this.file), { recursive: true });
      await writeFileAtomic(this.file, JSON.stringify({ format: 'finetune-file-digests/1', files: Object.fromEntries(kept) }));
      this.changed = false;
    } catch {
      // A memo that cannot be written only costs hashing the files again next time.
    }
  }
}

async function readMemo(file: string): Promise<Map<string, MemoRow>> {
  try {
    const parsed = JSON.parse(await fs.readFile(file, 'utf8')) as { format?: string; files?: Record<string, MemoRow> };
    if (parsed.format !== 'finetune-file-digests/1' || typeof parsed.files !== 'object' || parsed.files === null) return new Map();
    return new Map(Object.entries(parsed.files).filter(([, row]) => Array.isArray(row) && row.length === 6 && typeof row[4] === 'string'));
  } catch {
    return new Map(); // missing or unreadable: start afresh
  }
}


/** The cache key of a file's decoded pixels. */
export function decodedImageKey(fileSha256: string, size: number, resize: string): string {
  return `pixels|pipeline ${DECODE_PIPELINE_VERSION}|sharp ${JSON.stringify(sharp.versions)}|file ${fileSha256}|size ${size}|resize ${resize}`;
}

/**
 * `decodeAll` through the cache: images found there are not decoded; the others are decoded and
 * stored. `fromCache` says how many came from it. Files that fail to decode are not cached.
 */
export async function decodeAllCached(
  files: string[],
  options: DecodeAllOptions,
  cache: DiskCache,
  digests: FileDigests,
): Promise<DecodeAllResult & { fromCache: number }> {
  const bytes = options.size * options.size * 3;
  const keys = await Promise.all(
    files.map(async (file) => {
      const sha = await digests.digest(file);
      return sha === undefined ? undefined : decodedImageKey(sha, options.size, options.resize);
    }),
  );
  const known = files.map((_, i) => i).filter((i) => keys[i] !== undefined);
  const found = await cache.getMany('pixels', known.map((i) => keys[i]!));
  const images: (Uint8Array | undefined)[] = new Array(files.length).fill(undefined);
  known.forEach((i, j) => {
    if (found[j]?.length === bytes) images[i] = found[j];
  });
  const missing = files.map((_, i) => i).filter((i) => images[i] === undefined);
  const fromCache = files.length - missing.length;
  options.onProgress?.(fromCache, files.length);
  const decoded = await decodeAll(
    missing.map((i) => files[i]!),
    { ...options, onProgress: (done) => options.onProgress?.(fromCache + done, files.length) },
  );
  const fresh: { key: string; payload: Uint8Array }[] = [];
  missing.forEach((i, j) => {
    images[i] = decoded.images[j];
    if (decoded.images[j] !== undefined && keys[i] !== undefined) fresh.push({ key: keys[i], payload: decoded.images[j] });
  });
  await cache.putMany('pixels', fresh);
  return { images, failures: decoded.failures, fromCache };
}
