/**
 * `--sort-into <dir>`: puts each labelled file into `<dir>/<label>/`, never overwriting anything and
 * never losing a file.
 */
import { constants as fsConstants, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { fileDigest } from '../io/digest.js';
import { UsageError } from '../errors.js';

/** copy (the default), move, or a symbolic link to the original. */
export type SortMode = 'copy' | 'move' | 'link';

export interface SortOptions {
  /** Folder that receives one subfolder per label. */
  dir: string;
  mode?: SortMode;
  /** Only work out where each file would go (nothing is created). */
  dryRun?: boolean;
}

/** Where one file went, or would go (dry run), or why it could not. */
export interface SortOutcome {
  action: SortMode;
  /** Absolute destination path. */
  destination: string;
  dryRun: boolean;
  /** Set when the file could not be put there; the original is then untouched. */
  error?: string;
}

/** Error codes of link(2) meaning "hard links are not possible here": fall back to copy + verify + unlink. */
const NO_HARD_LINK = new Set(['EXDEV', 'EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EMLINK', 'EACCES']);

/** Names a label folder may not have. */
export function checkLabelFolderName(label: string, what = 'label'): void {
  if (label === '' || label === '.' || label === '..' || /[/\\\0]/.test(label)) {
    throw new UsageError(`${JSON.stringify(label)} cannot be a folder name; choose another ${what}.`);
  }
}

/**
 * Places files into `<dir>/<label>/<name>`. When the name is taken it tries `<stem>-1<ext>`,
 * `<stem>-2<ext>`, … Every creation is exclusive (it fails rather than replaces), so two runs sorting
 * into one folder at once cannot overwrite each other either.
 *
 * Moving: a hard link to the new name, then unlinking the old one (one file system: atomic, nothing to
 * copy); across file systems: copy, flush, compare the two files' SHA-256, and only then unlink.
 */
export class Sorter {
  readonly dir: string;
  readonly mode: SortMode;
  readonly dryRun: boolean;
  /** Destinations this run has claimed, so a dry run plans unique names as a real run would. */
  private readonly claimed = new Set<string>();
  private readonly made = new Set<string>();

  constructor(options: SortOptions) {
    this.dir = path.resolve(options.dir);
    this.mode = options.mode ?? 'copy';
    this.dryRun = options.dryRun ?? false;
    if (!['copy', 'move', 'link'].includes(this.mode)) throw new UsageError(`sort mode must be copy, move or link, got ${String(this.mode)}`);
  }

  /** Puts `source` under `label`. Never throws for a file: the outcome carries the error. */
  async place(source: string, label: string): Promise<SortOutcome> {
    const folder = path.join(this.dir, label);
    const name = path.basename(source);
    let destination = path.join(folder, name);
    try {
      checkLabelFolderName(label);
      // Already in its label's folder (e.g. sorting the sorted folder again): leave it be.
      if (path.resolve(source) === destination) return { action: this.mode, destination, dryRun: this.dryRun };
      if (this.dryRun) {
        for (const candidate of candidates(folder, name)) {
          if (this.claimed.has(candidate) || (await fs.lstat(candidate).catch(() => undefined)) !== undefined) continue;
          destination = candidate;
          break;
        }
        this.claimed.add(destination);
        return { action: this.mode, destination, dryRun: true };
      }
      if (!this.made.has(folder)) {
        await fs.mkdir(folder, { recursive: true });
        this.made.add(folder);
      }
      for (const candidate of candidates(folder, name)) {
        destination = candidate;
        if (this.claimed.has(candidate)) continue;
        try {
          await this.put(path.resolve(source), candidate);
          this.claimed.add(candidate);
          return { action: this.mode, destination, dryRun: false };
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'EEXIST') continue; // taken: try the next name
          throw error;
        }
      }
      throw new Error('no free name'); // unreachable: candidates() never ends
    } catch (error) {
      return { action: this.mode, destination, dryRun: this.dryRun, error: describe(error) };
    }
  }

  /** Creates `target` exclusively; throws EEXIST when it is taken. */
  private async put(source: string, target: string): Promise<void> {
    if (this.mode === 'copy') return fs.copyFile(source, target, fsConstants.COPYFILE_EXCL);
    if (this.mode === 'link') return fs.symlink(source, target);
    try {
      await fs.link(source, target);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? '';
      if (!NO_HARD_LINK.has(code)) throw error;
      await copyVerified(source, target);
    }
    try {
      await fs.unlink(source);
    } catch (error) {
      throw new Error(`copied to ${target}, but could not remove the original (${describe(error)})`);
    }
  }
}

/** Copies exclusively, flushes the copy to disk and checks it against the original; removes it when they differ. */
async function copyVerified(source: string, target: string): Promise<void> {
  await fs.copyFile(source, target, fsConstants.COPYFILE_EXCL);
  try {
    const handle = await fs.open(target, 'r+');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    const [a, b] = await Promise.all([fileDigest(source), fileDigest(target)]);
    if (a !== b) throw new Error('the copy differs from the original');
  } catch (error) {
    await fs.rm(target, { force: true });
    throw new Error(`could not move across file systems: ${describe(error)}; the original is kept`);
  }
}


function* candidates(folder: string, name: string): Generator<string> {
  yield path.join(folder, name);
  const ext = path.extname(name);
  const stem = name.slice(0, name.length - ext.length);
  for (let i = 1; ; i++) yield path.join(folder, `${stem}-${i}${ext}`);
}

function describe(error: unknown): string {
  const e = error as NodeJS.ErrnoException;
  if (e?.code === 'ENOENT') return 'file not found';
  if (e?.code === 'EACCES' || e?.code === 'EPERM') return `permission denied (${e.code})`;
  if (e?.code === 'ENOSPC') return 'no space left on the device';
  return e instanceof Error ? e.message : String(error);
}
