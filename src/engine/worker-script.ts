/**
 * The WASM thread pool's worker script as a file that only this user can write.
 *
 * Node starts each pthread worker from a file, so the script (which tfjs ships only as a string)
 * must be written somewhere; whatever file is there gets executed. It goes into
 * `$FINETUNE_HOME/wasm-threads` (default `~/.cache/finetune/wasm-threads`), a folder created with
 * mode 0700 and used only while it is a real folder, owned by this user, writable by no one else;
 * otherwise into a fresh `mkdtemp` folder, removed at exit. The file is created exclusively under a
 * temporary name and renamed into place, and before every use it is opened without following
 * symbolic links and its SHA-256 compared with the script's: a planted, swapped or truncated file is
 * never run.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync, constants, fstatSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, unlinkSync,
  writeFileSync, type Stats,
} from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';

export interface WorkerScriptFile {
  /** Where the script is. */
  readonly path: string;
  /** The path, after checking that the file there still is the script (throws if it is not). */
  verifiedPath(): string;
}

export interface WorkerScriptOptions {
  /** The folder for the file (default: `$FINETUNE_HOME/wasm-threads`, or `~/.cache/finetune/wasm-threads`). */
  folder?: string;
}

/** Writes `script` where only this user can write (or finds it there, intact) and returns its file. */
export function privateWorkerScript(script: string, options: WorkerScriptOptions = {}): WorkerScriptFile {
  const hash = sha256(script);
  const folder = privateFolder(options.folder ?? defaultFolder());
  const path = join(folder, `wasm-worker-${hash.slice(0, 16)}.cjs`);
  if (problemWith(path, hash) !== undefined) writeExclusively(path, script);
  return {
    path,
    verifiedPath() {
      const problem = problemWith(path, hash);
      if (problem !== undefined) throw new Error(`the WASM worker script ${path} ${problem}; it was not run`);
      return path;
    },
  };
}

/** `$FINETUNE_HOME/wasm-threads`, `$FINETUNE_HOME` defaulting to `~/.cache/finetune` (as for weights). */
export function defaultFolder(): string {
  const home = process.env.FINETUNE_HOME;
  return join(home !== undefined && home !== '' ? home : join(homedir(), '.cache', 'finetune'), 'wasm-threads');
}

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

/** This process's user id, where the platform has them (not on Windows, whose ACLs guard the home folder). */
const uid = (): number | undefined => process.getuid?.();

/** Why a file or folder's owner or mode lets someone else change it; undefined if only this user can. */
function foreignControl(stats: Stats): string | undefined {
  const me = uid();
  if (me === undefined) return undefined;
  if (stats.uid !== me) return `is owned by another user (uid ${stats.uid})`;
  if ((stats.mode & 0o022) !== 0) return `is writable by other users (mode ${(stats.mode & 0o777).toString(8)})`;
  return undefined;
}

/** Why `folder` can't hold the script; undefined if it can. */
function folderProblem(folder: string): string | undefined {
  const stats = lstatSync(folder);
  if (stats.isSymbolicLink()) return 'is a symbolic link';
  if (!stats.isDirectory()) return 'is not a folder';
  return foreignControl(stats);
}

/** `wanted`, made (mode 0700) if missing, if only this user controls it; else a fresh private temporary folder. */
function privateFolder(wanted: string): string {
  let problem: string | undefined;
  try {
    mkdirSync(dirname(wanted), { recursive: true });
    try {
      mkdirSync(wanted, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    problem = folderProblem(wanted);
    if (problem === undefined) return wanted;
    console.warn(`finetune: ${wanted} ${problem}, so the WASM worker script goes to a private temporary folder instead (remove ${wanted} to fix this).`);
  } catch {
    // No writable cache folder (a read-only home, say): a temporary folder serves as well.
  }
  const folder = mkdtempSync(join(tmpdir(), 'finetune-wasm-')); // mode 0700, unpredictable name
  problem = folderProblem(folder);
  if (problem !== undefined) throw new Error(`the temporary folder ${folder} ${problem}`);
  process.once('exit', () => rmSync(folder, { recursive: true, force: true }));
  return folder;
}

/**
 * Why the file at `path` is not the script with SHA-256 `hash` in a folder only this user controls;
 * undefined if it is. Never follows a symbolic link, and never blocks on a FIFO.
 */
function problemWith(path: string, hash: string): string | undefined {
  const folder = folderProblem(dirname(path));
  if (folder !== undefined) return `is in a folder that ${folder}`;
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'is missing';
    if (code === 'ELOOP') return 'is a symbolic link';
    return `can't be opened (${code ?? String(e)})`;
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) return 'is not a regular file';
    const control = foreignControl(stats);
    if (control !== undefined) return control;
    if (sha256(readFileSync(fd)) !== hash) return 'has changed (its content is not the script finetune wrote)';
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** Creates the file under a fresh name (O_EXCL: never through a link) and renames it into place. */
function writeExclusively(path: string, script: string): void {
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    writeFileSync(temp, script, { flag: 'wx', mode: 0o600 });
    renameSync(temp, path); // replaces a stale file or link itself, never a link's target
  } catch (e) {
    try {
      unlinkSync(temp);
    } catch {
      // not created
    }
    throw e;
  }
}
