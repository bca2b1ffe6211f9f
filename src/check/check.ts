/**
 * `finetune check <data>`: looks at a data folder the way training will read it and reports what
 * would quietly spoil a run — counts and class imbalance, files that do not decode, odd images,
 * exact and near-duplicates (across splits they make validation accuracy lie), and images whose
 * label the pretrained features doubt. It never writes into the data folder.
 */
import path from 'node:path';
import { DEFAULTS } from '../defaults.js';
import { loadImageData } from '../data/image-data.js';
import { discoverLayout } from '../data/layout.js';
import type { DatasetLayout, ResizeMode } from '../data/types.js';
import { initEngine, type BackendRequest } from '../engine/backend.js';
import { UsageError } from '../errors.js';
import { relativeName } from '../io/run-outputs.js';
import { silentReporter, type Reporter } from '../reporter.js';
import { crossesSplits, exactDuplicateGroups, layoutFiles, type SplitName } from './exact.js';
import { loadFeatureModel, pooledFeatures, resolveFeatureOptions } from './features.js';
import { readImageHeader, type ImageIssueKind } from './inspect.js';
import { outOfFoldProbabilities, rankSuspects } from './labels.js';
import { crossSplitNearDuplicates } from './near.js';
import { cropHashes } from './phash.js';
import { alignedCorrelation, alignedThumbnails } from './verify.js';

export interface CheckOptions {
  data: string;
  backbone?: string;
  alpha?: number | undefined;
  imageSize?: number | undefined;
  weights?: string;
  /** As training fits images; default 'crop', as `finetune`'s. */
  resize?: ResizeMode;
  valSplit?: number;
  seed?: number;
  backend?: BackendRequest;
  batchSize?: number;
  reporter?: Reporter;
}

/** Above this ratio of the largest to the smallest training class, the report advises class weights. */
export const IMBALANCE_ADVICE_RATIO = 2;
/** Above this ratio, training warns. */
export const IMBALANCE_WARNING_RATIO = 3;

export interface Imbalance {
  /** Largest / smallest training class (Infinity when a class has no images). */
  ratio: number;
  largest: { class: string; count: number };
  smallest: { class: string; count: number };
  advice: string;
}

export interface Duplicate {
  kind: 'exact' | 'near';
  /** Paths relative to the data folder, '/'-separated. */
  files: string[];
  /** The split of each file. */
  splits: string[];
  /** The class folder of each file ('' for unlabelled test images): copies filed under two classes are label conflicts. */
  labels: string[];
  /** 1 for byte-identical files; the features' cosine similarity for near-duplicates. */
  similarity: number;
  /** Near-duplicates: how many of the 63 pHash bits differ (crop-tolerant). */
  hashDistance?: number;
  /** Near-duplicates: the aligned colour-thumbnail correlation. */
  correlation?: number;
  crossSplit: boolean;
}

export interface SuspectLabel {
  file: string;
  split: string;
  label: string;
  predicted: string;
  /** p(predicted) − p(label), out of fold; higher is more suspect. */
  score: number;
  /** p(label), out of fold. */
  selfConfidence: number;
}

export interface FileNote {
  file: string;
  split: string;
  reason: string;
}

export interface ImageNote {
  file: string;
  split: string;
  kind: ImageIssueKind;
  detail: string;
}

export interface CheckReport {
  data: string;
  backbone: { name: string; alpha: number; imageSize: number; weights: string };
  resize: ResizeMode;
  /** Where validation images come from: a folder's name, 'split' (held out of train) or 'none'. */
  validSource: string;
  valSplit: number;
  seed: number;
  classes: string[];
  counts: {
    train: Record<string, number>;
    valid: Record<string, number>;
    test: number;
    total: number;
  };
  imbalance: Imbalance;
  unreadable: FileNote[];
  /** Files discovery does not use (outside class folders, broken links). */
  skipped: FileNote[];
  ignored: { hidden: number; notImage: number };
  images: ImageNote[];
  /** Cross-split groups first (exact, then near, most similar first), then within-split ones. */
  duplicates: Duplicate[];
  /** Most suspect first. */
  suspectLabels: SuspectLabel[];
  /** How the label probe went, or why it did not run. */
  labelCheck: { ran: boolean; images: number; folds: number; outOfFoldAccuracy?: number; note?: string };
  warnings: string[];
  backend: string;
  seconds: number;
  /** Seconds per step: where the time went. */
  timings: Record<string, number>;
}

/** Folds of the label probe. */
const FOLDS = 5;

/** Counts per class of a labelled split. */
function countByClass(files: { label: number }[], classes: string[]): Record<string, number> {
  const counts = Object.fromEntries(classes.map((c) => [c, 0]));
  for (const f of files) counts[classes[f.label]!]! += 1;
  return counts;
}

/** The imbalance of the training classes, with what to do about it. */
export function imbalanceOf(trainCounts: Record<string, number>): Imbalance {
  const entries = Object.entries(trainCounts);
  const largest = entries.reduce((a, b) => (b[1] > a[1] ? b : a));
  const smallest = entries.reduce((a, b) => (b[1] < a[1] ? b : a));
  const ratio = smallest[1] === 0 ? Infinity : largest[1] / smallest[1];
  const shown = Number.isFinite(ratio) ? ratio.toFixed(1) : '∞';
  let advice: string;
  if (ratio <= IMBALANCE_ADVICE_RATIO) advice = 'balanced enough: nothing to do';
  else if (ratio <= IMBALANCE_WARNING_RATIO) {
    advice = `mildly imbalanced (${shown}×): keep --class-weight auto (the default), which weights the loss by class`;
  } else {
    advice =
      `imbalanced (${shown}×): keep --class-weight auto (the default); judge the model by balanced accuracy and per-class ` +
      `recall (metrics.json), and consider adding images to '${smallest[0]}'`;
  }
  return { ratio, largest: { class: largest[0], count: largest[1] }, smallest: { class: smallest[0], count: smallest[1] }, advice };
}

/** Refuses an output folder inside the data folder: check never writes into the data. */
export function assertOutsideData(out: string, data: string): void {
  const rel = path.relative(path.resolve(data), path.resolve(out));
  if (rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel))) {
    throw new UsageError(`--out ${out} is inside the data folder ${path.resolve(data)}; check never writes there: choose another --out`);
  }
}

/** Runs the whole check. Findings are data, not errors: it throws only when the folder cannot be read. */
export async function checkData(options: CheckOptions): Promise<CheckReport> {
  const started = performance.now();
  const timings: Record<string, number> = {};
  let lap = started;
  const timed = (step: string) => {
    const now = performance.now();
    timings[step] = round((now - lap) / 1000, 2);
    lap = now;
  };
  const reporter = options.reporter ?? silentReporter;
  const valSplit = options.valSplit ?? DEFAULTS.valSplit;
  const seed = options.seed ?? DEFAULTS.seed;
  const resize = options.resize ?? DEFAULTS.resize;
  const backbone = options.backbone ?? DEFAULTS.backbone;
  const weights = options.weights ?? DEFAULTS.weights;

  resolveFeatureOptions({ backbone, alpha: options.alpha, imageSize: options.imageSize, weights }); // usage errors first
  const layout = await discoverLayout(options.data, { valSplit, seed });
  const root = layout.root;
  const rel = (file: string) => relativeName(root, file);
  const warnings = [...(layout.warnings ?? [])];
  for (const w of warnings) reporter.warn(w);

  // Weights before the slow parts: a missing or mismatched file fails in seconds.
  const engine = await initEngine(options.backend ?? DEFAULTS.backend);
  reporter.info(`backend: ${engine.detail}`);
  const fm = await loadFeatureModel({ backbone, alpha: options.alpha, imageSize: options.imageSize, weights, reporter });
  timed('start');
  try {
    const trainCounts = countByClass(layout.train, layout.classes);
    const counts = {
      train: trainCounts,
      valid: countByClass(layout.valid, layout.classes),
      test: layout.test.length,
      total: layout.train.length + layout.valid.length + layout.test.length,
    };

    const images = await inspectHeaders(layout, reporter);
    timed('headers');
    const exactGroups = await findExactDuplicates(layout, reporter);
    timed('exactDuplicates');

    const decodeTask = reporter.task('decoding', counts.total, 'images');
    const data = await loadImageData(layout, { size: fm.imageSize, resize, onProgress: (done) => decodeTask.update(done) });
    try {
      const known = new Set(layout.skipped.map((s) => s.path));
      const unreadable = data.skipped.filter((s) => !known.has(s.path)).map((s) => ({ file: rel(s.path), split: s.split, reason: s.reason }));
      decodeTask.finish(`decoded ${counts.total - unreadable.length} images; ${unreadable.length} could not be decoded`);
      timed('decoding');

      // Decoded images in one list: train, valid, test (the rows of the feature matrix).
      const sets = [
        { split: 'train' as const, set: data.train },
        { split: 'valid' as const, set: data.valid },
        { split: 'test' as const, set: data.test },
      ];
      const rows = sets.flatMap(({ split, set }) => set.paths.map((p, i) => ({ path: p, split, label: set.labels[i]!, set, index: i })));
      const featureTask = reporter.task('features', rows.length, 'images');
      const parts: Float32Array[] = [];
      let dim = 0;
      let done = 0;
      for (const { set } of sets) {
        const f = await pooledFeatures(fm, set.images, { batchSize: options.batchSize, onProgress: (n) => featureTask.update(done + n) });
        parts.push(f.data);
        dim = f.dim;
        done += set.images.length;
      }
      featureTask.finish(`features of ${rows.length} images (${dim} per image)`);
      timed('features');
      const features = concat(parts);
      const cosine = (a: number, b: number) => {
        let s = 0;
        for (let d = 0; d < dim; d++) s += features[a * dim + d]! * features[b * dim + d]!;
        return s;
      };

      // ---- duplicates
      const exactPairs = new Set<string>();
      const rowOf = new Map(rows.map((r, i) => [r.path, i]));
      for (const g of exactGroups) {
        const ids = g.files.map((f) => rowOf.get(f)).filter((i): i is number => i !== undefined);
        for (const a of ids) for (const b of ids) exactPairs.add(`${a},${b}`);
      }
      const hashes = rows.map((r) => cropHashes(r.set.images.get(r.index), fm.imageSize));
      // Thumbnails only for the images the hash pairs up (a few), computed once each.
      const thumbnails = new Map<number, Float32Array[]>();
      const thumbnailsOf = (i: number) => {
        let t = thumbnails.get(i);
        if (!t) thumbnails.set(i, (t = alignedThumbnails(rows[i]!.set.images.get(rows[i]!.index), fm.imageSize)));
        return t;
      };
      const near = crossSplitNearDuplicates(
        rows.map((r, i) => ({ split: r.split, hashes: hashes[i]! })),
        { cosine, correlation: (a, b) => alignedCorrelation(thumbnailsOf(a), thumbnailsOf(b)) },
        (a, b) => exactPairs.has(`${a},${b}`),
      );
      const classOf = new Map(layoutFiles(layout).map((f) => [f.path, f.label < 0 ? '' : layout.classes[f.label]!]));
      const duplicates = orderDuplicates([
        ...exactGroups.map((g) => ({
          kind: 'exact' as const,
          files: g.files.map(rel),
          splits: g.splits,
          labels: g.files.map((f) => classOf.get(f) ?? ''),
          similarity: 1,
          crossSplit: crossesSplits(g),
        })),
        ...near.map((p) => ({
          kind: 'near' as const,
          files: [rel(rows[p.a]!.path), rel(rows[p.b]!.path)],
          splits: [rows[p.a]!.split, rows[p.b]!.split],
          labels: [classOf.get(rows[p.a]!.path) ?? '', classOf.get(rows[p.b]!.path) ?? ''],
          similarity: round(p.cosine),
          hashDistance: p.distance,
          correlation: round(p.correlation),
          crossSplit: true,
        })),
      ]);

      timed('nearDuplicates');

      // ---- labels
      const labelled = rows.map((r, i) => ({ r, i })).filter(({ r }) => r.split !== 'test');
      const labelCheck = await checkLabels(labelled.map(({ i }) => i), rows, features, dim, layout.classes, seed, reporter);
      timed('labels');
      const suspectLabels = labelCheck.suspects.map((s) => ({
        file: rel(rows[s.row]!.path),
        split: rows[s.row]!.split,
        label: layout.classes[s.label]!,
        predicted: layout.classes[s.predicted]!,
        score: round(s.score),
        selfConfidence: round(s.selfConfidence),
      }));

      return {
        data: root,
        backbone: { name: fm.spec.name, alpha: fm.alpha, imageSize: fm.imageSize, weights: fm.weightsSource },
        resize,
        validSource: layout.validSource,
        valSplit,
        seed,
        classes: layout.classes,
        counts,
        imbalance: imbalanceOf(trainCounts),
        unreadable,
        skipped: layout.skipped.map((s) => ({ file: rel(s.path), split: s.split, reason: s.reason })),
        ignored: layout.ignored,
        images: images.map((n) => ({ ...n, file: rel(n.file) })),
        duplicates,
        suspectLabels,
        labelCheck: labelCheck.summary,
        warnings,
        backend: engine.detail,
        seconds: round((performance.now() - started) / 1000, 1),
        timings,
      };
    } finally {
      data.dispose();
    }
  } finally {
    fm.dispose();
  }
}

const round = (x: number, digits = 4) => Number(x.toFixed(digits));

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** Runs `work` over `items`, `concurrency` at a time, in order. */
async function mapLimited<T, R>(items: readonly T[], concurrency: number, work: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await work(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return out;
}

/** Tiny images, unusual colour modes and EXIF rotation, from each file's header. */
async function inspectHeaders(layout: DatasetLayout, reporter: Reporter): Promise<{ file: string; split: SplitName; kind: ImageIssueKind; detail: string }[]> {
  const files = layoutFiles(layout);
  const task = reporter.task('reading headers', files.length, 'files');
  let done = 0;
  const headers = await mapLimited(files, 8, async (f) => {
    const h = await readImageHeader(f.path);
    task.update(++done);
    return h;
  });
  const notes = files.flatMap((f, i) => (headers[i]?.issues ?? []).map((issue) => ({ file: f.path, split: f.split, ...issue })));
  task.finish(`read ${files.length} headers: ${notes.length} notes (tiny, colour mode, EXIF rotation)`);
  return notes;
}

async function findExactDuplicates(layout: DatasetLayout, reporter: Reporter) {
  const task = reporter.task('hashing same-size files', 0, 'files');
  const groups = await exactDuplicateGroups(layout, { onProgress: (done) => task.update(done) });
  task.finish(`exact duplicates: ${groups.length} group${groups.length === 1 ? '' : 's'} (${groups.filter(crossesSplits).length} across splits)`);
  return groups;
}

/** Cross-split first; exact before near; then the most similar first; then by first file. */
function orderDuplicates(list: Duplicate[]): Duplicate[] {
  return list.sort(
    (a, b) =>
      Number(b.crossSplit) - Number(a.crossSplit) ||
      (a.kind === b.kind ? 0 : a.kind === 'exact' ? -1 : 1) ||
      b.similarity - a.similarity ||
      a.files[0]!.localeCompare(b.files[0]!),
  );
}

interface LabelCheckResult {
  suspects: { row: number; label: number; predicted: number; score: number; selfConfidence: number }[];
  summary: CheckReport['labelCheck'];
}

/** The k-fold label probe on the labelled rows (train and valid). */
async function checkLabels(
  labelledRows: number[],
  rows: { label: number }[],
  features: Float32Array,
  dim: number,
  classes: string[],
  seed: number,
  reporter: Reporter,
): Promise<LabelCheckResult> {
  const labels = Int32Array.from(labelledRows, (i) => rows[i]!.label);
  const perClass = classes.map((_, c) => labels.filter((l) => l === c).length);
  const smallest = Math.min(...perClass);
  if (smallest < 2) {
    const note = `not run: class '${classes[perClass.indexOf(smallest)]}' has ${smallest} decodable labelled image${smallest === 1 ? '' : 's'} (needs 2 or more)`;
    reporter.info(`label check ${note}`);
    return { suspects: [], summary: { ran: false, images: labels.length, folds: 0, note } };
  }
  const x = new Float32Array(labelledRows.length * dim);
  labelledRows.forEach((row, i) => x.set(features.subarray(row * dim, (row + 1) * dim), i * dim));
  const task = reporter.task('label check', 1, `(${FOLDS}-fold linear probe)`);
  const probs = await outOfFoldProbabilities(x, dim, labels, classes.length, { folds: FOLDS, seed });
  let correct = 0;
  for (let i = 0; i < labels.length; i++) {
    const row = probs.subarray(i * classes.length, (i + 1) * classes.length);
    if (row.indexOf(Math.max(...row)) === labels[i]) correct++;
  }
  const suspects = rankSuspects(probs, labels, classes.length).map((s) => ({ ...s, row: labelledRows[s.index]! }));
  const accuracy = correct / labels.length;
  task.finish(`label check: out-of-fold accuracy ${(100 * accuracy).toFixed(1)} %, ${suspects.length} suspect label${suspects.length === 1 ? '' : 's'}`);
  return { suspects, summary: { ran: true, images: labels.length, folds: FOLDS, outOfFoldAccuracy: round(accuracy) } };
}

/** True when copies of one picture are filed under different classes. */
export function labelsConflict(d: Pick<Duplicate, 'labels'>): boolean {
  return new Set(d.labels.filter((l) => l !== '')).size > 1;
}

/** True when the report holds duplicates across splits (what --strict fails on). */
export function hasCrossSplitDuplicates(report: CheckReport): boolean {
  return report.duplicates.some((d) => d.crossSplit);
}
