import * as path from 'node:path';
import type { SkippedFile } from '../data/types.js';
import type { EpochLogs } from '../train/learner.js';
import { writeFileAtomic } from './atomic.js';
import { toCsv } from './csv.js';

/** The files a training run writes into its output folder. */
export const RUN_FILES = {
  model: 'model',
  config: 'finetune.json',
  history: 'history.csv',
  metrics: 'metrics.json',
  skipped: 'skipped.csv',
  predictions: 'predictions.csv',
  /** Present while a run is in progress or interrupted; removed when it finishes. */
  checkpoint: 'checkpoint',
} as const;

const round = (x: number | undefined, digits = 6): string | number =>
  x === undefined || Number.isNaN(x) ? '' : Number(x.toPrecision(digits));

export async function writeJson(file: string, value: unknown): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n');
}

export async function writeHistoryCsv(file: string, history: readonly EpochLogs[]): Promise<void> {
  const rows = history.map((h) => [
    h.stage,
    h.epoch,
    round(h.loss),
    round(h.accuracy),
    round(h.valLoss),
    round(h.valAccuracy),
    round(h.lr),
    round(h.seconds, 4),
  ]);
  await writeFileAtomic(file, toCsv(['stage', 'epoch', 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'lr', 'seconds'], rows));
}

export async function writeSkippedCsv(file: string, skipped: readonly SkippedFile[], root: string): Promise<void> {
  const rows = skipped.map((s) => [relativeName(root, s.path), s.split, s.reason]);
  await writeFileAtomic(file, toCsv(['file', 'split', 'reason'], rows));
}

/** One prediction per image: `file,label,confidence,` then one probability column per class. */
export async function writePredictionsCsv(
  file: string,
  rows: readonly { file: string; probabilities: ArrayLike<number> }[],
  classes: readonly string[],
): Promise<void> {
  await writeFileAtomic(file, predictionsCsv(rows, classes));
}

export function predictionsCsv(rows: readonly { file: string; probabilities: ArrayLike<number> }[], classes: readonly string[]): string {
  const body = rows.map(({ file, probabilities }) => {
    let best = 0;
    for (let j = 1; j < classes.length; j++) if (probabilities[j]! > probabilities[best]!) best = j;
    return [file, classes[best]!, round(probabilities[best]), ...Array.from(probabilities, (p) => round(p))];
  });
  return toCsv(['file', 'label', 'confidence', ...classes], body);
}

/** A path shown relative to the data folder, with forward slashes, so outputs read the same everywhere. */
export function relativeName(root: string, file: string): string {
  const rel = path.relative(root, file);
  return (rel.startsWith('..') ? file : rel).split(path.sep).join('/');
}
