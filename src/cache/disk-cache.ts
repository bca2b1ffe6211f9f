/**
 * The persistent cache between runs: decoded images and frozen-layer outputs, kept in
 * `$FINETUNE_HOME/cache` (default `~/.cache/finetune/cache`) so that a second run with the same
 * data and backbone skips the work.
 *
 * Each entry is one file, named by the sha256 of its key (a string naming everything that decides
 * its bytes). A file holds a small header (magic, the key itself, the payload's length and sha256)
 * then the payload. Entries are written under a temporary name and renamed, and every read checks
 * the header and the payload's digest: a truncated or corrupt file (a killed run, a full disk, a
 * power cut) is deleted and counts as a miss, so the run recomputes it instead of trusting it.
 * A hit sets the file's mtime to now: eviction removes the least recently used entries first, down
 * to the size cap, after each run has written.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';

/** finetune's home folder: `$FINETUNE_HOME`, default `~/.cache/finetune` (weights, native builds and this cache live there). */
export function finetuneHome(): string {
  const home = process.env.FINETUNE_HOME;
  return home !== undefined && home !== '' ? path.resolve(home) : path.join(os.homedir(), '.cache', 'finetune');
}

/** `$FINETUNE_CACHE_DIR` when set (the tests point it at a temporary folder), else `$FINETUNE_HOME/cache`. */
export function defaultCacheDir(): string {
  const dir = process.env.FINETUNE_CACHE_DIR;
  return dir !== undefined && dir !== '' ? path.resolve(dir) : path.join(finetuneHome(), 'cache');
}

export const DEFAULT_DISK_CACHE_MB = 4096;

/** The size cap in MiB: `FINETUNE_DISK_CACHE_MB` when set, else 4096. */
export function defaultDiskCacheMb(): number {
  const value = process.env.FINETUNE_DISK_CACHE_MB;
  if (value === undefined || value.trim() === '') return DEFAULT_DISK_CACHE_MB;
  const mb = Number(value);
  if (!Number.isFinite(mb) || mb < 0) throw new RangeError(`FINETUNE_DISK_CACHE_MB=${value} is not valid: use a number of MiB ≥ 0`);
  return mb;
}

/** The kinds of entry (one subfolder each): decoded images, frozen-layer outputs, report pictures, stage 1's results. */
export const CACHE_KINDS = ['pixels', 'frozen', 'report', 'stage'];
/** (path, size, mtime, ctime, inode) → sha256 of the file, so unchanged files are not read again to be hashed. */
export const FILE_DIGEST_MEMO = 'file-digests.json';

const MAGIC = Buffer.from('FTCACHE1', 'latin1');
/** Temporary files older than this are leftovers of a killed run, removed by eviction. */
const STALE_TEMP_MS = 60 * 60 * 1000;
/** Files read or written at once. */
const IO_CONCURRENCY = 16;

export interface DiskCacheOptions {
  /** Default `$FINETUNE_HOME/cache`. */
  dir?: string;
  /** Size cap in bytes; eviction removes least recently used entries past it. Default `defaultDiskCacheMb()` MiB. */
  maxBytes?: number;
}

export interface DiskCacheStats {
  dir: string;
  entries: number;
  bytes: number;
  maxBytes: number;
  /** Entries and bytes per kind (`pixels`: decoded images, `frozen`: frozen-layer outputs, `report`: top-losses pictures, `stage`: stage 1's results). */
  kinds: Record<string, { entries: number; bytes: number }>;
}

interface EntryHeader {
  key: string;
  bytes: number;
  sha256: string;
}

/** The persistent cache; see the file's comment. Every method tolerates a missing folder. */
export class DiskCache {
  readonly dir: string;
  readonly maxBytes: number;
  /** What this process asked for and got, per kind (for the run log). */
  readonly counts: Record<string, { hits: number; lookups: number; corrupt: number; written: number }> = {};

  constructor(options: DiskCacheOptions = {}) {
    this.dir = path.resolve(options.dir ?? defaultCacheDir());
    this.maxBytes = options.maxBytes ?? defaultDiskCacheMb() * 1024 ** 2;
  }

  /** sha256 (hex) of a key's text: entry file names, and digests that go into other keys. */
  static hash(text: string | Uint8Array): string {
    return createHash('sha256').update(text).digest('hex');
  }

  /** The payload stored under `key`, or undefined (missing, or corrupt: then it is deleted). */
  async get(kind: string, key: string): Promise<Uint8Array | undefined> {
    const counts = this.countsFor(kind);
    counts.lookups += 1;
    const file = this.fileFor(kind, key);
    let buffer: Buffer;
    try {
      buffer = await fs.readFile(file);
    } catch {
      return undefined;
    }
    const payload = parseEntry(buffer, key);
    if (payload === undefined) {
      counts.corrupt += 1;
      await fs.rm(file, { force: true });
      return undefined;
    }
    counts.hits += 1;
    // Recently used: eviction goes by mtime (atime is often not kept: noatime, relatime).
    const now = new Date();
    await fs.utimes(file, now, now).catch(() => undefined);
    return payload;
  }

  /** Stores `payload` under `key` atomically (temporary file, then rename). Failures (disk full) are ignored: a cache is optional. */
  async put(kind: string, key: string, payload: Uint8Array): Promise<void> {
    const file = this.fileFor(kind, key);
    const header = Buffer.from(JSON.stringify({ key, bytes: payload.length, sha256: DiskCache.hash(payload) } satisfies EntryHeader), 'utf8');
    const length = Buffer.alloc(4);
    length.writeUInt32LE(header.length);
    const tmp = path.join(path.dirname(file), `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
    try {
      await fs.mkdir(path.dirname(file), { recursive: true });
      // No fsync: a file the OS lost half of after a crash fails the digest check on read.
      await fs.writeFile(tmp, Buffer.concat([MAGIC, length, header, payload]));
      await fs.rename(tmp, file);
      this.countsFor(kind).written += 1;
    } catch {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
    }
  }

  /** `get` for many keys, a few files at a time; results in `keys` order. */
  async getMany(kind: string, keys: string[]): Promise<(Uint8Array | undefined)[]> {
    const out: (Uint8Array | undefined)[] = new Array(keys.length).fill(undefined);
    await forEachLimited(keys.length, async (i) => {
      out[i] = await this.get(kind, keys[i]!);
    });
    return out;
  }

  /** `put` for many entries, a few files at a time. */
  async putMany(kind: string, entries: { key: string; payload: Uint8Array }[]): Promise<void> {
    await forEachLimited(entries.length, (i) => this.put(kind, entries[i]!.key, entries[i]!.payload));
  }

  /**
   * Removes least recently used entries until the cache is within `maxBytes`, and temporary files
   * left by killed runs. Returns what it removed.
   */
  async evict(maxBytes = this.maxBytes): Promise<{ entries: number; bytes: number }> {
    const files = await this.listFiles();
    const now = Date.now();
    const entries = files.filter((f) => !f.temp);
    for (const f of files) if (f.temp && now - f.mtimeMs > STALE_TEMP_MS) await fs.rm(f.file, { force: true });
    let total = entries.reduce((n, f) => n + f.bytes, 0);
    const removed = { entries: 0, bytes: 0 };
    entries.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const f of entries) {
      if (total <= maxBytes) break;
      await fs.rm(f.file, { force: true });
      total -= f.bytes;
      removed.entries += 1;
      removed.bytes += f.bytes;
    }
    return removed;
  }

  /** Entries and bytes on disk, per kind. */
  async stats(): Promise<DiskCacheStats> {
    const stats: DiskCacheStats = { dir: this.dir, entries: 0, bytes: 0, maxBytes: this.maxBytes, kinds: {} };
    for (const f of await this.listFiles()) {
      if (f.temp) continue;
      stats.entries += 1;
      stats.bytes += f.bytes;
      const kind = (stats.kinds[f.kind] ??= { entries: 0, bytes: 0 });
      kind.entries += 1;
      kind.bytes += f.bytes;
    }
    return stats;
  }

  /** Deletes every entry and the file-digest memo (only what the cache wrote: the folder may have been given by hand). */
  async clear(): Promise<{ entries: number; bytes: number }> {
    const { entries, bytes } = await this.stats();
    for (const name of await readdirOrEmpty(this.dir)) {
      if (CACHE_KINDS.includes(name) || name === FILE_DIGEST_MEMO) await fs.rm(path.join(this.dir, name), { recursive: true, force: true });
    }
    await fs.rmdir(this.dir).catch(() => undefined); // only when nothing else is left in it
    return { entries, bytes };
  }

  /** `<dir>/<kind>/<first two hex digits>/<sha256 of key>`: 256 subfolders keep folders small. */
  fileFor(kind: string, key: string): string {
    const name = DiskCache.hash(key);
    return path.join(this.dir, kind, name.slice(0, 2), name);
  }

  private countsFor(kind: string) {
    return (this.counts[kind] ??= { hits: 0, lookups: 0, corrupt: 0, written: 0 });
  }

  private async listFiles(): Promise<{ file: string; kind: string; bytes: number; mtimeMs: number; temp: boolean }[]> {
    const out: { file: string; kind: string; bytes: number; mtimeMs: number; temp: boolean }[] = [];
    for (const kind of await readdirOrEmpty(this.dir)) {
      if (!CACHE_KINDS.includes(kind)) continue;
      const kindDir = path.join(this.dir, kind);
      for (const shard of await readdirOrEmpty(kindDir)) {
        const shardDir = path.join(kindDir, shard);
        for (const name of await readdirOrEmpty(shardDir)) {
          const file = path.join(shardDir, name);
          const st = await fs.stat(file).catch(() => undefined);
          if (st?.isFile()) out.push({ file, kind, bytes: st.size, mtimeMs: st.mtimeMs, temp: name.startsWith('.tmp-') });
        }
      }
    }
    return out;
  }
}

/** The payload of an entry file when its header, key, length and digest all check out. */
function parseEntry(buffer: Buffer, key: string): Uint8Array | undefined {
  if (buffer.length < MAGIC.length + 4 || !buffer.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  const headerLength = buffer.readUInt32LE(MAGIC.length);
  const start = MAGIC.length + 4 + headerLength;
  if (start > buffer.length) return undefined;
  let header: EntryHeader;
  try {
    header = JSON.parse(buffer.subarray(MAGIC.length + 4, start).toString('utf8')) as EntryHeader;
  } catch {
    return undefined;
  }
  const payload = buffer.subarray(start);
  if (header.key !== key || header.bytes !== payload.length || header.sha256 !== DiskCache.hash(payload)) return undefined;
  return new Uint8Array(payload.buffer, payload.byteOffset, payload.length);
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir);
  } catch {
    return [];
  }
}

async function forEachLimited(n: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) await work(next++);
  };
  await Promise.all(Array.from({ length: Math.min(IO_CONCURRENCY, n) }, worker));
}
