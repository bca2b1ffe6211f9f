/**
 * `finetune evaluate`: a model against a folder of labelled images (one subfolder per class, or the
 * training layout's valid/ or test/ split): accuracy, balanced accuracy, per-class precision / recall /
 * F1, the confusion matrix, ROC AUC (2 classes), top-k accuracy, and the misclassified files sorted by
 * loss (fastai's "top losses").
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { BackendRequest } from '../engine/backend.js';
import type { InferenceEngineRequest } from './onnx-engine.js';
import { compareCodePoints, VALIDATION_FOLDER_NAMES } from '../data/layout.js';
import { FinetuneError, UsageError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { toCsv } from '../io/csv.js';
import { relativeName, writeJson } from '../io/run-outputs.js';
import { silentReporter, type Reporter } from '../reporter.js';
import { writeRunReport } from '../report/index.js';
import { argmax, classificationMetrics, type ClassificationMetrics } from '../train/metrics.js';
import { Classifier, loadClassifier, type InferenceInfo } from './classifier.js';
import { ImageDecoder } from './decoder.js';
import { emptyExpandStats, expandInputs, type InputFile } from './inputs.js';
import { decodedBatches } from './predict.js';

export type EvaluateSplit = 'train' | 'valid' | 'test';

export interface EvaluateOptions {
  /**
   * In the training layout (train/, valid/, test/), the split to evaluate on. Default: valid/
   * (or validation/, val/) when there is one, else test/.
   */
  split?: EvaluateSplit;
  /** Images per model call (default 32). */
  batchSize?: number;
  /** Average each image's prediction with its mirror's. */
  tta?: boolean;
  /** Report top-1 … top-k accuracy (default 5, at most the number of classes). */
  topK?: number;
  /** Compute backend when `model` is a folder (default 'auto'). */
  backend?: BackendRequest;
  /** Inference engine when `model` is a folder (default 'auto': ONNX Runtime when installed; see LoadClassifierOptions). */
  engine?: InferenceEngineRequest;
  reporter?: Reporter;
}

/** One scored file. */
export interface ScoredFile {
  /** Path relative to the labelled folder (forward slashes). */
  file: string;
  /** True class. */
  label: string;
  predicted: string;
  /** Cross-entropy of the true class: −ln p(label). */
  loss: number;
  /** Probabilities in the model's class order. */
  probabilities: number[];
}

export interface EvaluationMetrics extends ClassificationMetrics {
  /** Fraction of images whose true class is among the k most likely, for k = 1 … topK. */
  topKAccuracy: Record<string, number>;
  /** The class whose probability ROC AUC scores (2 classes only). */
  rocAucPositiveClass?: string;
}

export interface EvaluationResult {
  /** The model's run folder. */
  model: string;
  /** The folder holding the class folders. */
  data: string;
  /** The split evaluated, in the training layout; undefined for a plain folder of class folders. */
  split?: string;
  /** The model's classes (metrics are in this order). */
  classes: string[];
  metrics: EvaluationMetrics;
  /** Class folders the model does not know: their images were not scored. */
  extraClasses: { name: string; files: number }[];
  /** Model classes with no folder (their support is 0). */
  missingClasses: string[];
  /** Files that could not be read or decoded. */
  unreadable: { file: string; reason: string }[];
  /** Every scored file, in folder order. */
  files: ScoredFile[];
  /** The misclassified files, highest loss first. */
  errors: ScoredFile[];
  tta: boolean;
  /** What ran the model (tfjs or ONNX Runtime) and why. */
  inference: InferenceInfo;
  seconds: number;
}

const nFiles = (n: number) => `${n} file${n === 1 ? '' : 's'}`;

const LAYOUT_NAMES = new Set(['train', 'test', ...VALIDATION_FOLDER_NAMES]);

/** Evaluates a model folder (or a loaded Classifier) on a folder of labelled images. */
export async function evaluate(model: string | Classifier, labelledDir: string, options: EvaluateOptions = {}): Promise<EvaluationResult> {
  const started = performance.now();
  const reporter = options.reporter ?? silentReporter;
  const batchSize = options.batchSize ?? 32;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new UsageError(`--batch-size ${batchSize} is not valid: use a whole number ≥ 1.`);
  if (options.split !== undefined && !['train', 'valid', 'test'].includes(options.split)) {
    throw new UsageError(`--split ${String(options.split)} is not valid: use valid, test or train.`);
  }
  const classifier = typeof model === 'string' ? await loadClassifier(model, { backend: options.backend, engine: options.engine, reporter }) : model;
  try {
    const classes = [...classifier.classes];
    const topK = Math.min(options.topK ?? 5, classes.length);
    if (!Number.isInteger(topK) || topK < 1) throw new UsageError(`--top-k ${options.topK} is not valid: use a whole number ≥ 1.`);
    const found = await findClassFolders(path.resolve(labelledDir), classes, options.split);
    const index = new Map(classes.map((c, i) => [c, i]));
    const known = found.folders.filter((f) => index.has(f.name));
    const extra = found.folders.filter((f) => !index.has(f.name));

    // Labelled files, in class order.
    const labelled: { input: InputFile; label: number }[] = [];
    const extraClasses: { name: string; files: number }[] = [];
    const stats = emptyExpandStats();
    for (const folder of [...known, ...extra]) {
      const files: InputFile[] = [];
      for await (const f of expandInputs([folder.dir], { stats })) files.push(f);
      if (index.has(folder.name)) for (const input of files) labelled.push({ input, label: index.get(folder.name)! });
      else extraClasses.push({ name: folder.name, files: files.length });
    }
    const present = new Set(known.map((f) => f.name));
    const missingClasses = classes.filter((c) => !present.has(c));
    for (const e of extraClasses) {
      const near = classes.find((c) => c.toLowerCase() === e.name.toLowerCase());
      reporter.warn(
        `class folder ${e.name}/ (${nFiles(e.files)}) is not one of the model's classes${near ? ` (did you mean ${near}?)` : ''}: not scored.`,
      );
    }
    if (missingClasses.length > 0) reporter.warn(`no folder for the model's class${missingClasses.length > 1 ? 'es' : ''} ${missingClasses.join(', ')}.`);
    if (known.length === 0) {
      throw new FinetuneError(
        `${found.root} has no folder named after a class of the model. Its folders: ${found.folders.map((f) => f.name).join(', ') || 'none'}; ` +
          `the model's classes: ${classes.join(', ')}. Pass a folder of class folders (<class>/*.jpg).`,
      );
    }
    if (labelled.length === 0) throw new FinetuneError(`the class folders in ${found.root} hold no image files.`);

    const labelOf = new Map(labelled.map((l) => [l.input.path, l.label]));
    const k = classes.length;
    const probabilities: number[] = [];
    const labels: number[] = [];
    const files: ScoredFile[] = [];
    const unreadable: { file: string; reason: string }[] = [];
    const decoder = new ImageDecoder(classifier.size, classifier.resize);
    const task = reporter.task('evaluating', labelled.length, 'images');
    let done = 0;
    try {
      async function* source() {
        for (const l of labelled) yield l.input;
      }
      for await (const batch of decodedBatches(source(), decoder, { batchSize, concurrency: Math.min(batchSize, 64) })) {
        const ok = batch.filter((d) => d.pixels !== undefined);
        const probs = await classifier.predictPixels(
          ok.map((d) => d.pixels!),
          { tta: options.tta ?? false },
        );
        let j = 0;
        for (const item of batch) {
          const file = relativeName(found.root, item.input.path);
          if (item.pixels === undefined) {
            unreadable.push({ file, reason: item.error ?? 'cannot decode' });
            continue;
          }
          const row = Array.from(probs.subarray(j * k, (j + 1) * k));
          j++;
          const label = labelOf.get(item.input.path)!;
          probabilities.push(...row);
          labels.push(label);
          files.push({
            file,
            label: classes[label]!,
            predicted: classes[argmax(row)]!,
            loss: -Math.log(Math.max(row[label]!, 1e-7)),
            probabilities: row,
          });
        }
        done += batch.length;
        task.update(done);
      }
    } finally {
      await decoder.close();
    }
    task.finish(`evaluated ${files.length} images${unreadable.length > 0 ? `; ${unreadable.length} could not be read` : ''}`);
    for (const u of unreadable.slice(0, 5)) reporter.warn(`cannot read ${u.file}: ${u.reason}`);
    if (unreadable.length > 5) reporter.warn(`… and ${unreadable.length - 5} more unreadable files (listed in metrics.json)`);
    if (files.length === 0) throw new FinetuneError(`none of the ${labelled.length} images in ${found.root} could be read.`);

    const probs = Float32Array.from(probabilities);
    const base = classificationMetrics(probs, labels, classes);
    const metrics: EvaluationMetrics = { ...base, topKAccuracy: topKAccuracy(probs, labels, k, topK) };
    if (metrics.rocAuc !== undefined) metrics.rocAucPositiveClass = classes[1];
    const errors = files
      .filter((f) => f.predicted !== f.label)
      .sort((a, b) => b.loss - a.loss || compareCodePoints(a.file, b.file));
    return {
      model: classifier.location.runDir,
      data: found.root,
      split: found.split,
      classes,
      metrics,
      extraClasses,
      missingClasses,
      unreadable,
      files,
      errors,
      tta: options.tta ?? false,
      inference: classifier.inference,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    if (typeof model === 'string') classifier.dispose();
  }
}

/**
 * Top-k accuracy for k = 1 … maxK: the true class counts as within the top k when fewer than k
 * classes score above it (ties broken by class order, as argmax does).
 */
export function topKAccuracy(probabilities: Float32Array, labels: readonly number[], k: number, maxK: number): Record<string, number> {
  const hits = new Array<number>(maxK + 1).fill(0);
  for (let i = 0; i < labels.length; i++) {
    const row = probabilities.subarray(i * k, (i + 1) * k);
    const t = labels[i]!;
    let rank = 0;
    for (let c = 0; c < k; c++) if (row[c]! > row[t]! || (row[c] === row[t] && c < t)) rank++;
    for (let j = rank + 1; j <= maxK; j++) hits[j]!++;
  }
  const out: Record<string, number> = {};
  for (let j = 1; j <= maxK; j++) out[String(j)] = labels.length === 0 ? 0 : hits[j]! / labels.length;
  return out;
}

async function subfolders(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { withFileTypes: true });
  const out: string[] = [];
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    if (e.isDirectory() || (e.isSymbolicLink() && (await fs.stat(path.join(dir, e.name)).catch(() => undefined))?.isDirectory())) out.push(e.name);
  }
  return out.sort(compareCodePoints);
}

/**
 * The class folders to score: `dir/<class>/`, or in the training layout (a train/, valid/ or test/
 * folder that is not a class of the model) `dir/<split>/<class>/`.
 */
async function findClassFolders(
  dir: string,
  classes: readonly string[],
  split: EvaluateSplit | undefined,
): Promise<{ root: string; split?: string; folders: { name: string; dir: string }[] }> {
  const stat = await fs.stat(dir).catch(() => undefined);
  if (stat === undefined) throw new FinetuneError(`labelled folder not found: ${dir}.`);
  if (!stat.isDirectory()) throw new FinetuneError(`${dir} is a file: pass a folder of class folders (<class>/*.jpg).`);
  const top = await subfolders(dir);
  const classSet = new Set(classes);
  const layout = top.filter((n) => LAYOUT_NAMES.has(n.toLowerCase()) && !classSet.has(n));
  let root = dir;
  let splitName: string | undefined;
  if (layout.length > 0) {
    const find = (names: readonly string[]) => layout.find((n) => names.includes(n.toLowerCase()));
    const valid = find(VALIDATION_FOLDER_NAMES);
    const want = split ?? (valid !== undefined ? 'valid' : 'test');
    splitName = want === 'valid' ? valid : find([want]);
    if (splitName === undefined) {
      throw new UsageError(
        `${dir} is in the training layout (${layout.join(', ')}) but has no ${want === 'valid' ? 'valid/ (or validation/, val/)' : `${want}/`} folder: ` +
          `choose another --split.`,
      );
    }
    root = path.join(dir, splitName);
  } else if (split !== undefined) {
    throw new UsageError(`--split ${split} needs the training layout (train/, valid/, test/ folders), but ${dir} holds class folders directly.`);
  }
  const folders = (await subfolders(root)).map((name) => ({ name, dir: path.join(root, name) }));
  return { root, split: splitName, folders };
}

/** The files `writeEvaluation` writes. */
export const EVALUATION_FILES = { metrics: 'metrics.json', errors: 'errors.csv' } as const;

/**
 * Writes metrics.json and errors.csv into `outDir` (atomically: readers see the old file or the new).
 * Returns their paths.
 */
export async function writeEvaluation(result: EvaluationResult, outDir: string): Promise<string[]> {
  const out = path.resolve(outDir);
  if (path.resolve(result.model) === out) {
    throw new UsageError(`--out ${out} is the model's folder: metrics.json there holds the training run's own metrics. Choose another --out.`);
  }
  await fs.mkdir(out, { recursive: true });
  const metricsFile = path.join(out, EVALUATION_FILES.metrics);
  const errorsFile = path.join(out, EVALUATION_FILES.errors);
  const { metrics } = result;
  await writeJson(metricsFile, {
    model: result.model,
    data: result.data,
    split: result.split ?? null,
    tta: result.tta,
    engine: { name: result.inference.engine, detail: result.inference.detail, reason: result.inference.reason },
    classes: result.classes,
    samples: metrics.samples,
    accuracy: metrics.accuracy,
    accuracyCI95: metrics.accuracyCI95,
    balancedAccuracy: metrics.balancedAccuracy,
    loss: metrics.loss,
    topKAccuracy: metrics.topKAccuracy,
    ...(metrics.rocAuc !== undefined ? { rocAuc: metrics.rocAuc, rocAucPositiveClass: metrics.rocAucPositiveClass } : {}),
    ...(metrics.rocAucMacro !== undefined ? { rocAucMacro: metrics.rocAucMacro } : {}),
    perClass: metrics.perClass,
    confusionMatrix: metrics.confusionMatrix,
    extraClasses: result.extraClasses,
    missingClasses: result.missingClasses,
    unreadable: result.unreadable,
  });
  const round = (x: number) => Number(x.toPrecision(6));
  const rows = result.errors.map((e) => {
    const t = result.classes.indexOf(e.label);
    const p = result.classes.indexOf(e.predicted);
    return [e.file, e.label, e.predicted, round(e.loss), round(e.probabilities[t]!), round(e.probabilities[p]!)];
  });
  await writeFileAtomic(errorsFile, toCsv(['file', 'label', 'predicted', 'loss', 'p_label', 'p_predicted'], rows));
  // The pictures and report.html, as a training run writes them (no curves: nothing was trained).
  const config = JSON.parse(await fs.readFile(path.join(result.model, 'finetune.json'), 'utf8')) as object;
  const pictures = await writeRunReport(out, {
    config,
    metrics: { ...metrics, classes: result.classes },
    topLosses: result.errors.slice(0, 16).map((e) => ({
      path: path.join(result.data, e.file),
      trueLabel: e.label,
      predicted: e.predicted,
      probability: e.probabilities[result.classes.indexOf(e.predicted)]!,
      loss: e.loss,
    })),
    title: `evaluation of ${path.basename(result.model)} on ${result.split ? `${result.split}/ of ` : ''}${result.data}`,
    split: result.split ?? 'evaluated',
  });
  return [metricsFile, errorsFile, ...pictures.map((name) => path.join(out, name))];
}

/** The evaluation as a table for people: overall figures, per-class figures, confusion matrix. */
export function evaluationTable(result: EvaluationResult): string {
  const { metrics, classes } = result;
  const f = (x: number) => x.toFixed(4);
  const lines: string[] = [];
  lines.push(
    `${metrics.samples} images${result.split ? ` (${result.split}/)` : ''}: accuracy ${f(metrics.accuracy)}, ` +
      `balanced accuracy ${f(metrics.balancedAccuracy)}, loss ${f(metrics.loss)}`,
  );
  const [lo, hi] = metrics.accuracyCI95;
  lines.push(`accuracy 95 % CI ${lo.toFixed(2)}–${hi.toFixed(2)} (Wilson): a difference inside it is within this set's noise`);
  const topk = Object.entries(metrics.topKAccuracy).filter(([k]) => k !== '1');
  if (topk.length > 0) lines.push(topk.map(([k, v]) => `top-${k} accuracy ${f(v)}`).join(', '));
  if (metrics.rocAuc !== undefined) lines.push(`ROC AUC ${f(metrics.rocAuc)} (positive class: ${metrics.rocAucPositiveClass})`);
  else if (metrics.rocAucMacro !== undefined) lines.push(`ROC AUC ${f(metrics.rocAucMacro)} (macro average, one class against the rest)`);
  lines.push('');
  const width = Math.max(5, ...classes.map((c) => c.length));
  const pad = (s: string, n: number) => s.padEnd(n);
  const lpad = (s: string, n: number) => s.padStart(n);
  lines.push(`${pad('class', width)}  precision  recall      f1  support`);
  for (const c of classes) {
    const m = metrics.perClass[c]!;
    lines.push(`${pad(c, width)}  ${lpad(f(m.precision), 9)}  ${lpad(f(m.recall), 6)}  ${lpad(f(m.f1), 6)}  ${lpad(String(m.support), 7)}`);
  }
  lines.push('');
  lines.push('confusion matrix (rows: true class, columns: predicted)');
  const cw = Math.max(...classes.map((c) => c.length), ...metrics.confusionMatrix.flat().map((n) => String(n).length));
  lines.push(`${pad('', width)}  ${classes.map((c) => lpad(c, cw)).join('  ')}`);
  metrics.confusionMatrix.forEach((row, i) => lines.push(`${pad(classes[i]!, width)}  ${row.map((n) => lpad(String(n), cw)).join('  ')}`));
  if (result.extraClasses.length > 0) {
    lines.push('', `not scored (not classes of the model): ${result.extraClasses.map((e) => `${e.name} (${nFiles(e.files)})`).join(', ')}`);
  }
  if (result.missingClasses.length > 0) lines.push(`no images for: ${result.missingClasses.join(', ')}`);
  if (result.unreadable.length > 0) lines.push(`${nFiles(result.unreadable.length)} could not be read (listed in metrics.json)`);
  return lines.join('\n') + '\n';
}
