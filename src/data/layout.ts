/**
 * Finding the images: which classes there are, which files are training, validation and test images.
 *
 * Two layouts are understood:
 *
 *   data/train/<class>/*.jpg          one folder per class (nested subfolders belong to the class)
 *   data/valid/<class>/*.jpg          optional; also `validation/` or `val/`. Without it, a seeded,
 *                                     stratified share of train is held out (valSplit)
 *   data/test/*.jpg                   optional; unlabelled images to label (test/unknown/*.jpg too)
 *   data/test/<class>/*.jpg           optional; a labelled test set, evaluated once after training
 *
 * or, like Keras `image_dataset_from_directory`, class folders directly in `data/` (no `train/`).
 */
import { promises as fsp } from 'node:fs';
import type { Dirent, Stats } from 'node:fs';
import path from 'node:path';
import fg from 'fast-glob';
import { FinetuneError, UsageError } from '../errors.js';
import { Rng } from './rng.js';
import type { DatasetLayout, LabelledFile, SkippedFile } from './types.js';

/** Image file extensions finetune reads (lower case; matching ignores case). */
export const IMAGE_EXTENSIONS: readonly string[] = ['jpg', 'jpeg', 'png', 'webp', 'gif', 'tif', 'tiff', 'avif'];

/** Names of the validation folder, in the order they are looked for. */
export const VALIDATION_FOLDER_NAMES: readonly string[] = ['valid', 'validation', 'val'];

const IMAGE_EXT_SET = new Set(IMAGE_EXTENSIONS.map((e) => '.' + e));

/** How the expected layout is shown in error messages. */
export const EXPECTED_LAYOUT = [
  'Expected a folder like:',
  '  data/',
  '    train/<class>/*.jpg    one folder per class, at least 2 classes',
  '    valid/<class>/*.jpg    (optional) validation images; otherwise part of train is held out',
  '    test/*.jpg             (optional) unlabelled images to label',
  'or class folders directly in data/ (data/<class>/*.jpg).',
].join('\n');

export interface DiscoverOptions {
  /** Share of each training class held out for validation when there is no validation folder. Default 0.2; 0 = none. */
  valSplit?: number;
  /** Seed of the held-out split. Default 42. */
  seed?: number;
}

/** True when the file name has one of the image extensions (any case). */
export function isImageFile(file: string): boolean {
  return IMAGE_EXT_SET.has(path.extname(file).toLowerCase());
}

/**
 * Compares strings by Unicode code point (what Python's `sorted` does, so class indices match Keras).
 * JavaScript's default sort compares UTF-16 code units, which differs for characters beyond U+FFFF.
 */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Move surrogates (D800–DFFF) above E000–FFFF: then code-unit order equals code-point order.
    if (x >= 0xd800) x += x <= 0xdfff ? 0x2000 : -0x800;
    if (y >= 0xd800) y += y <= 0xdfff ? 0x2000 : -0x800;
    return x - y;
  }
  return a.length - b.length;
}

/**
 * Finds the classes and the train / validation / test images under `root`.
 *
 * Paths in the result are absolute and sorted, so the result does not depend on the file system's
 * listing order. Throws a FinetuneError that says what to change when the folder does not fit.
 */
export async function discoverLayout(root: string, options: DiscoverOptions = {}): Promise<DatasetLayout> {
  const valSplit = options.valSplit ?? 0.2;
  const seed = options.seed ?? 42;
  if (!(typeof valSplit === 'number' && valSplit >= 0 && valSplit < 1)) {
    throw new UsageError(`The validation split must be a number from 0 to below 1 (e.g. 0.2), got ${valSplit}.`);
  }
  if (!Number.isFinite(seed)) throw new UsageError(`The seed must be a number, got ${seed}.`);

  const absRoot = path.resolve(root);
  let rootStat: Stats;
  try {
    rootStat = await fsp.stat(absRoot);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new FinetuneError(`Data folder not found: ${absRoot}. Check the path.\n${EXPECTED_LAYOUT}`, { cause: err });
    }
    throw new FinetuneError(`Cannot read the data folder ${absRoot} (${code ?? String(err)}).`, { cause: err });
  }
  if (!rootStat.isDirectory()) {
    throw new FinetuneError(
      `The data path ${absRoot} is a file, not a folder. Pass the folder that holds the class folders.\n${EXPECTED_LAYOUT}`,
    );
  }

  const top = await listSubfolders(absRoot);
  const findTop = (name: string) => top.find((d) => d.toLowerCase() === name);
  const trainName = findTop('train');
  const validNames = VALIDATION_FOLDER_NAMES.map(findTop).filter((n): n is string => n !== undefined);
  const testName = findTop('test');

  const ignored = { hidden: 0, notImage: 0 };
  const skipped: SkippedFile[] = [];
  const warnings: string[] = [];

  // ---- classes and training images
  let classDirs: { name: string; dir: string }[];
  let trainLabel: string; // how the training folder is named in messages
  if (trainName !== undefined) {
    const trainDir = path.join(absRoot, trainName);
    trainLabel = `${trainName}/`;
    classDirs = (await listSubfolders(trainDir))
      .filter((n) => !n.startsWith('.'))
      .map((name) => ({ name, dir: path.join(trainDir, name) }));
    const loose = await scanLoose(trainDir);
    countIgnored(loose, ignored);
    for (const f of loose.images) {
      skipped.push({ path: f, split: 'train', reason: `not inside a class folder (expected ${trainName}/<class>/${path.basename(f)})` });
    }
    skipped.push(...loose.broken.map((f) => brokenLink(f, 'train')));
  } else {
    const excluded = new Set(['test', ...VALIDATION_FOLDER_NAMES]);
    classDirs = top
      .filter((n) => !n.startsWith('.') && !excluded.has(n.toLowerCase()))
      .map((name) => ({ name, dir: path.join(absRoot, name) }));
    trainLabel = 'the data folder';
  }
  classDirs.sort((a, b) => compareCodePoints(a.name, b.name));

  const perClass: string[][] = [];
  const empty: string[] = [];
  for (const { name, dir } of classDirs) {
    const scan = await scanFiles(dir);
    countIgnored(scan, ignored);
    skipped.push(...scan.broken.map((f) => brokenLink(f, 'train')));
    perClass.push(scan.images);
    if (scan.images.length === 0) {
      const other = scan.hidden + scan.notImage;
      empty.push(`${name}${other > 0 ? ` (${other} file${other === 1 ? '' : 's'}, none with an image extension)` : ''}`);
    }
  }

  if (trainName === undefined && perClass.every((f) => f.length === 0)) {
    throw new FinetuneError(
      `No "train" folder and no class folders with images in ${absRoot}.\n${EXPECTED_LAYOUT}\n` +
        `Image extensions read: ${IMAGE_EXTENSIONS.join(', ')}.`,
    );
  }
  if (empty.length > 0) {
    throw new FinetuneError(
      `Class folder${empty.length > 1 ? 's' : ''} without images in ${trainLabel}: ${empty.join(', ')}. ` +
        `Every class needs training images: add some, or remove the folder. ` +
        `Image extensions read: ${IMAGE_EXTENSIONS.join(', ')}.`,
    );
  }
  const classes = classDirs.map((c) => c.name);
  if (classes.length < 2) {
    const found = classes.length === 0 ? 'no class folders' : `only 1 class ("${classes[0]}")`;
    throw new FinetuneError(
      `Found ${found} in ${trainLabel} (${trainName !== undefined ? path.join(absRoot, trainName) : absRoot}); ` +
        `a classifier needs at least 2, one folder per class.\n${EXPECTED_LAYOUT}`,
    );
  }

  // ---- validation
  let train: LabelledFile[] = [];
  let valid: LabelledFile[] = [];
  let validSource: string;
  const validName = validNames[0];
  if (validNames.length > 1) {
    warnings.push(`Found several validation folders (${validNames.join(', ')}); using "${validName}".`);
  }
  if (validName !== undefined) {
    validSource = validName;
    const validDir = path.join(absRoot, validName);
    const index = new Map(classes.map((c, i) => [c, i]));
    for (let i = 0; i < classes.length; i++) {
      for (const p of perClass[i]!) train.push({ path: p, label: i });
    }
    const validClasses = (await listSubfolders(validDir)).filter((n) => !n.startsWith('.'));
    const unknown = validClasses.filter((c) => !index.has(c));
    if (unknown.length > 0) {
      const hints = unknown
        .map((u) => {
          const near = classes.find((c) => c.toLowerCase() === u.toLowerCase());
          return near !== undefined ? `"${u}" (did you mean "${near}"?)` : `"${u}"`;
        })
        .join(', ');
      throw new FinetuneError(
        `${validName}/ has class folder${unknown.length > 1 ? 's' : ''} ${hints} that ${trainLabel} does not have. ` +
          `Classes in ${trainLabel}: ${classes.join(', ')}. Rename or remove the folder, or add training images for it.`,
      );
    }
    for (const c of validClasses) {
      const scan = await scanFiles(path.join(validDir, c));
      countIgnored(scan, ignored);
      skipped.push(...scan.broken.map((f) => brokenLink(f, 'valid')));
      if (scan.images.length === 0) warnings.push(`${validName}/${c} has no images.`);
      for (const p of scan.images) valid.push({ path: p, label: index.get(c)! });
    }
    const loose = await scanLoose(validDir);
    countIgnored(loose, ignored);
    for (const f of loose.images) {
      skipped.push({ path: f, split: 'valid', reason: `not inside a class folder (expected ${validName}/<class>/${path.basename(f)})` });
    }
    skipped.push(...loose.broken.map((f) => brokenLink(f, 'valid')));
  } else if (valSplit > 0) {
    validSource = 'split';
    const base = new Rng(seed);
    for (let i = 0; i < classes.length; i++) {
      const files = perClass[i]!;
      const n = files.length;
      // At least 1 held out when the class has 2+ images; never all of them.
      let k = Math.round(n * valSplit);
      if (n >= 2) k = Math.min(Math.max(k, 1), n - 1);
      else {
        k = 0;
        warnings.push(`Class "${classes[i]}" has only 1 image: none held out for validation.`);
      }
      // One stream per class name: adding a class does not change the other classes' splits.
      const shuffled = base.fork(`split:${classes[i]}`).shuffle(files.slice());
      for (let j = 0; j < n; j++) (j < k ? valid : train).push({ path: shuffled[j]!, label: i });
    }
  } else {
    validSource = 'none';
    for (let i = 0; i < classes.length; i++) {
      for (const p of perClass[i]!) train.push({ path: p, label: i });
    }
  }
  const byPath = (a: LabelledFile, b: LabelledFile) => compareCodePoints(a.path, b.path);
  train = train.sort(byPath);
  valid = valid.sort(byPath);

  // ---- test
  let test: string[] = [];
  const testLabelled: LabelledFile[] = [];
  if (testName !== undefined) {
    const testDir = path.join(absRoot, testName);
    const scan = await scanFiles(testDir);
    countIgnored(scan, ignored);
    skipped.push(...scan.broken.map((f) => brokenLink(f, 'test')));
    // test/<class>/ named like a training class is a labelled test set; everything else
    // (test/*.jpg, test/unknown/, other folders) is to be labelled.
    for (const file of scan.images) {
      const first = path.relative(testDir, file).split(path.sep)[0]!;
      const label = first === path.basename(file) ? -1 : classes.indexOf(first);
      if (label >= 0) testLabelled.push({ path: file, label });
      else test.push(file);
    }
  }

  skipped.sort((a, b) => compareCodePoints(a.path, b.path));
  return { root: absRoot, classes, train, valid, test, ...(testLabelled.length > 0 ? { testLabelled } : {}), validSource, ignored, skipped, warnings };
}

// ---------------------------------------------------------------------------------------------------

interface Scan {
  /** Absolute paths of image files, sorted. */
  images: string[];
  hidden: number;
  notImage: number;
  /** Symbolic links whose target does not exist. */
  broken: string[];
}

function countIgnored(scan: Scan, ignored: { hidden: number; notImage: number }): void {
  ignored.hidden += scan.hidden;
  ignored.notImage += scan.notImage;
}

function brokenLink(file: string, split: string): SkippedFile {
  return { path: file, split, reason: 'broken symbolic link (its target does not exist)' };
}

/** Names of the subfolders of `dir` (following symbolic links), unsorted. */
async function listSubfolders(dir: string): Promise<string[]> {
  let entries: Dirent[];
  try {
    entries = await fsp.readdir(dir, { withFileTypes: true });
  } catch (err) {
    throw new FinetuneError(`Cannot list the folder ${dir} (${(err as NodeJS.ErrnoException).code ?? String(err)}).`, {
      cause: err,
    });
  }
  const out: string[] = [];
  for (const e of entries) {
    if (e.isDirectory()) out.push(e.name);
    else if (e.isSymbolicLink()) {
      const st = await fsp.stat(path.join(dir, e.name)).catch(() => undefined);
      if (st?.isDirectory()) out.push(e.name);
    }
  }
  return out;
}

/**
 * The files directly in `dir` (not in a class folder), plus everything in its hidden subfolders
 * (e.g. `.ipynb_checkpoints/`), which counts as hidden.
 */
async function scanLoose(dir: string): Promise<Scan> {
  const scan = await scanFiles(dir, { maxDepth: 1 });
  for (const name of await listSubfolders(dir)) {
    if (!name.startsWith('.')) continue;
    const inner = await scanFiles(path.join(dir, name));
    scan.hidden += inner.images.length + inner.hidden + inner.notImage + inner.broken.length;
  }
  return scan;
}

/** Symbolic links to folders nested deeper than this are not followed (a guard; loops are caught earlier). */
const MAX_LINK_DEPTH = 16;

/**
 * Lists the files under `dir` recursively with fast-glob and sorts them into images, hidden files and
 * other files. Paths are reported as seen from `dir` (through links), absolute.
 *
 * fast-glob's own `followSymbolicLinks` would walk a link to a parent folder until the OS gives up
 * (and twice per level for two such links), so links are resolved here: a link to a folder is walked
 * unless its target contains the link itself or one of the folders being walked (a loop).
 */
async function scanFiles(dir: string, opts: { maxDepth?: number } = {}): Promise<Scan> {
  const scan: Scan = { images: [], hidden: 0, notImage: 0, broken: [] };
  const realDir = await fsp.realpath(dir);
  await walk(dir, realDir, [realDir], '', opts.maxDepth, scan, 0);
  scan.images.sort(compareCodePoints);
  scan.broken.sort(compareCodePoints);
  return scan;
}

async function walk(
  logicalDir: string,
  realDir: string,
  chain: string[],
  relPrefix: string,
  maxDepth: number | undefined,
  scan: Scan,
  linkDepth: number,
): Promise<void> {
  const entries = await fg('**', {
    cwd: realDir,
    dot: true,
    onlyFiles: false,
    followSymbolicLinks: false,
    objectMode: true,
    suppressErrors: true, // an unreadable subfolder should not stop discovery
    ...(maxDepth !== undefined ? { deep: maxDepth } : {}),
  });
  for (const entry of entries) {
    const rel = relPrefix + entry.path;
    const logical = path.join(logicalDir, entry.path);
    const hidden = rel.split('/').some((seg) => seg.startsWith('.'));
    const d = entry.dirent;
    if (d.isFile()) {
      classify(logical, hidden, scan);
    } else if (d.isSymbolicLink()) {
      const linkPath = path.join(realDir, entry.path);
      const st = await fsp.stat(linkPath).catch(() => undefined);
      if (st === undefined) {
        if (hidden) scan.hidden++;
        else if (isImageFile(logical)) scan.broken.push(logical);
        else scan.notImage++;
      } else if (st.isFile()) {
        classify(logical, hidden, scan);
      } else if (st.isDirectory()) {
        const depthUsed = entry.path.split('/').length;
        if (maxDepth !== undefined && depthUsed >= maxDepth) continue;
        if (linkDepth >= MAX_LINK_DEPTH) continue;
        const target = await fsp.realpath(linkPath).catch(() => undefined);
        if (target === undefined) continue;
        const parentReal = path.dirname(linkPath);
        const isAncestor = (p: string) => p === target || p.startsWith(target + path.sep);
        if (isAncestor(parentReal) || chain.some(isAncestor)) continue; // a loop: skip
        await walk(
          logical,
          target,
          [...chain, target],
          rel + '/',
          maxDepth === undefined ? undefined : maxDepth - depthUsed,
          scan,
          linkDepth + 1,
        );
      }
    }
  }
}

function classify(file: string, hidden: boolean, scan: Scan): void {
  if (hidden) scan.hidden++;
  else if (isImageFile(file)) scan.images.push(file);
  else scan.notImage++;
}
