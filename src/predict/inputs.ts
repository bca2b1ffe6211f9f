/**
 * Turning what a user names on the command line (files, folders, glob patterns, `-` for stdin) into
 * a stream of image files, and picking a shard of them.
 *
 * Files stream out one at a time: stdin is read line by line as it arrives (so `find … | finetune
 * predict m -` starts at once), and only paths are ever held, never pixels.
 */
import { createHash } from 'node:crypto';
import type { Dirent } from 'node:fs';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import fg from 'fast-glob';
import { compareCodePoints, isImageFile } from '../data/layout.js';
import { UsageError } from '../errors.js';

/** One file to label. */
export interface InputFile {
  /**
   * The name shown in outputs and used by --shard and --resume: a file as it was given; a file found
   * in a folder as the folder was given joined with its path below it (forward slashes).
   */
  file: string;
  /** Absolute path. */
  path: string;
  /** Set when the input could not even be listed (a folder that cannot be read). */
  error?: string;
}

/** What expansion passed over, for the summary. */
export interface ExpandStats {
  /** Files in folders or glob matches without an image extension. */
  notImage: number;
  /** Hidden files and folders (names starting with a dot) inside folders. */
  hidden: number;
  /** Files named more than once (e.g. by a folder and a pattern). */
  duplicates: number;
}

export interface ExpandOptions {
  /** What `-` reads, one path per line (default process.stdin). */
  stdin?: NodeJS.ReadableStream;
  /** Folders never walked into, e.g. the --sort-into folder (so sorted copies are not labelled again). */
  exclude?: readonly string[];
  /** Called for inputs that yield nothing, e.g. a pattern matching no image file. */
  onWarning?: (message: string) => void;
  /** Filled in while expanding. */
  stats?: ExpandStats;
}

/** A new, zeroed ExpandStats. */
export const emptyExpandStats = (): ExpandStats => ({ notImage: 0, hidden: 0, duplicates: 0 });

/**
 * Expands inputs into files, in order: each input in turn; a folder's files sorted (by code point,
 * depth first); a pattern's matches sorted. Each file is yielded once (by absolute path).
 *
 * - an existing file: yielded whatever its extension (a non-image gives an error row later);
 * - an existing folder: every file with an image extension below it, hidden files and folders
 *   skipped, symbolic links followed (loops skipped);
 * - otherwise, a glob pattern (fast-glob syntax): its matches with an image extension;
 * - `-`: one path per line from stdin, each a file or a folder (lines are not patterns);
 * - anything else (a missing file): yielded, so that it becomes an error row ("file not found").
 */
export async function* expandInputs(inputs: Iterable<string> | AsyncIterable<string>, options: ExpandOptions = {}): AsyncGenerator<InputFile> {
  const stats = options.stats ?? emptyExpandStats();
  const warn = options.onWarning ?? (() => {});
  const exclude = new Set<string>();
  for (const dir of options.exclude ?? []) exclude.add(await fs.realpath(dir).catch(() => path.resolve(dir)));
  const seen = new Set<string>();
  const once = async function* (items: AsyncIterable<InputFile> | Iterable<InputFile>): AsyncGenerator<InputFile> {
    for await (const item of items) {
      // By absolute path (not the link target): two names of one file are two results, as asked.
      const key = item.path;
      if (seen.has(key)) {
        stats.duplicates++;
        continue;
      }
      seen.add(key);
      yield item;
    }
  };
  let stdinUsed = false;
  for await (const input of inputs) {
    if (input === '-') {
      if (stdinUsed) throw new UsageError("'-' (read paths from stdin) can be given only once.");
      stdinUsed = true;
      for await (const line of readLines(options.stdin ?? process.stdin)) {
        yield* once(expandPath(line, { exclude, stats, warn, glob: false }));
      }
    } else {
      yield* once(expandPath(input, { exclude, stats, warn, glob: true }));
    }
  }
}

async function* readLines(stream: NodeJS.ReadableStream): AsyncGenerator<string> {
  const lines = readline.createInterface({ input: stream, crlfDelay: Infinity });
  for await (const line of lines) {
    if (line.trim() !== '') yield line;
  }
}

interface ExpandContext {
  exclude: Set<string>;
  stats: ExpandStats;
  warn: (message: string) => void;
  glob: boolean;
}

async function* expandPath(input: string, ctx: ExpandContext): AsyncGenerator<InputFile> {
  const abs = path.resolve(input);
  const stat = await fs.stat(abs).catch(() => undefined);
  if (stat?.isDirectory()) {
    const files: InputFile[] = [];
    await walk(abs, input, ctx, files, new Set([await fs.realpath(abs)]));
    if (files.length === 0) warn(ctx, `no image files in the folder ${input}`);
    yield* files;
  } else if (stat === undefined && ctx.glob && fg.isDynamicPattern(input)) {
    const matches = await fg(input, { dot: false, onlyFiles: true, unique: true, followSymbolicLinks: true, suppressErrors: true });
    matches.sort(compareCodePoints);
    let yielded = 0;
    for (const m of matches) {
      if (!isImageFile(m)) {
        ctx.stats.notImage++;
        continue;
      }
      yielded++;
      yield { file: m, path: path.resolve(m) };
    }
    if (yielded === 0) warn(ctx, `the pattern ${input} matched no image files${matches.length > 0 ? ` (${matches.length} other files)` : ''}`);
  } else {
    // A file, or a missing path: decoding will say which ("file not found").
    yield { file: input, path: abs };
  }
}

function warn(ctx: ExpandContext, message: string): void {
  ctx.warn(message);
}

/** Depth-first, entries sorted by code point; `shown` is the folder as the user wrote it. */
async function walk(dir: string, shown: string, ctx: ExpandContext, out: InputFile[], visited: Set<string>): Promise<void> {
  let entries: Dirent[];
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    out.push({ file: toShown(shown), path: dir, error: `cannot list the folder (${code})` });
    return;
  }
  entries.sort((a, b) => compareCodePoints(a.name, b.name));
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    const name = path.join(shown, entry.name);
    if (entry.name.startsWith('.')) {
      ctx.stats.hidden++;
      continue;
    }
    let isDir = entry.isDirectory();
    let isFile = entry.isFile();
    if (entry.isSymbolicLink()) {
      const target = await fs.stat(full).catch(() => undefined);
      isDir = target?.isDirectory() ?? false;
      // A broken link with an image name is kept: it becomes an error row ("file not found").
      isFile = target === undefined ? isImageFile(full) : target.isFile();
    }
    if (isDir) {
      const real = await fs.realpath(full).catch(() => full);
      if (visited.has(real) || ctx.exclude.has(real)) continue; // a loop, a folder seen twice, or an excluded one
      visited.add(real);
      await walk(full, name, ctx, out, visited);
    } else if (isFile) {
      if (isImageFile(entry.name)) out.push({ file: toShown(name), path: full });
      else ctx.stats.notImage++;
    }
  }
}

const toShown = (p: string) => p.split(path.sep).join('/');

/** One of n equal, disjoint parts of the inputs: `index` counts from 1. */
export interface Shard {
  index: number;
  count: number;
}

/** Parses `--shard i/n` (1 ≤ i ≤ n). */
export function parseShard(text: string): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  const index = m ? Number(m[1]) : NaN;
  const count = m ? Number(m[2]) : NaN;
  if (!m || count < 1 || index < 1 || index > count) {
    throw new UsageError(`--shard ${text} is not valid: use i/n with 1 ≤ i ≤ n, e.g. --shard 1/4 … --shard 4/4.`);
  }
  return { index, count };
}

/**
 * Which shard (1…n) a file belongs to: the first 4 bytes of the SHA-1 of its shown name (UTF-8),
 * as a big-endian unsigned integer, modulo n, plus 1. It depends on the name only, so every machine
 * given the same inputs in the same way agrees, with no shared list; a shard is about 1/n of the files.
 */
export function shardOf(file: string, count: number): number {
  const digest = createHash('sha1').update(file, 'utf8').digest();
  return (digest.readUInt32BE(0) % count) + 1;
}

export function inShard(file: string, shard: Shard | undefined): boolean {
  return shard === undefined || shard.count === 1 || shardOf(file, shard.count) === shard.index;
}
