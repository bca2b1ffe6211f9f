/**
 * The pictures and page a run leaves for people: curves.png, confusion.png, top-losses.png and
 * report.html, written by training and by `finetune evaluate`.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { DiskCache } from '../cache/disk-cache.js';
import type { SkippedFile } from '../data/types.js';
import { writeFileAtomic } from '../io/atomic.js';
import type { RunConfig } from '../runs/config.js';
import type { EpochLogs } from '../train/learner.js';
import { argmax, type ClassificationMetrics } from '../train/metrics.js';
import { renderConfusion } from './confusion.js';
import { renderCurves } from './curves.js';
import { renderReportHtml } from './html.js';
import { renderTopLosses, type TopLossItem } from './top-losses.js';

export { renderConfusion } from './confusion.js';
export { renderCurves, type CurvesOptions } from './curves.js';
export { renderReportHtml, REPORT_SECTIONS, type ReportInput } from './html.js';
export { renderTopLosses, type TopLossItem, type TopLossesOptions } from './top-losses.js';

/** The report files, by role. */
export const REPORT_FILES = {
  curves: 'curves.png',
  confusion: 'confusion.png',
  topLosses: 'top-losses.png',
  html: 'report.html',
} as const;

export interface RunReportInput {
  /** The run's finetune.json contents. */
  config: object;
  history?: readonly EpochLogs[];
  /** Metrics of the kept model; `classes` defaults to config.classes. */
  metrics?: ClassificationMetrics & { classes?: string[] };
  skipped?: readonly SkippedFile[];
  /** Misclassified images, worst first (see topLossItems); [] draws "no misclassified images". */
  topLosses?: readonly TopLossItem[];
  /** Page title (default "finetune report: <folder name>"). */
  title?: string;
  /** What the metrics and top losses were measured on (default 'validation'). */
  split?: string;
  /** The cache between runs, where top-losses.png is kept (see TopLossesOptions.cache). */
  cache?: DiskCache;
}

/**
 * Renders what the input allows and writes it into `out`, each file atomically: curves.png (with a
 * history), confusion.png (with metrics), top-losses.png (with items), and always report.html.
 * Returns the names of the files written. Every other report file in `out` is removed, also when
 * drawing fails: a picture an earlier run left (e.g. before `--overwrite`) would not match this run.
 */
export async function writeRunReport(out: string, input: RunReportInput): Promise<string[]> {
  const written: string[] = [];
  try {
    await renderAndWrite(out, input, written);
  } finally {
    await removeReportFilesExcept(out, written);
  }
  return written;
}

async function renderAndWrite(out: string, input: RunReportInput, written: string[]): Promise<void> {
  const config = input.config as RunConfig;
  const write = async (name: string, data: Buffer | string) => {
    await writeFileAtomic(path.join(out, name), data);
    written.push(name);
  };

  const pictures: { curves?: Buffer; confusion?: Buffer; topLosses?: Buffer } = {};
  if (input.history && input.history.length > 0) {
    pictures.curves = await renderCurves(input.history, { best: config.results?.bestEpoch ?? null });
    await write(REPORT_FILES.curves, pictures.curves);
  }
  const classes = input.metrics?.classes ?? config.classes;
  const metrics = input.metrics && classes ? { ...input.metrics, classes } : undefined;
  if (metrics) {
    pictures.confusion = await renderConfusion(metrics.confusionMatrix, metrics.classes);
    await write(REPORT_FILES.confusion, pictures.confusion);
  }
  if (input.topLosses) {
    pictures.topLosses = await renderTopLosses(input.topLosses, { split: input.split, ...(input.cache ? { cache: input.cache } : {}) });
    await write(REPORT_FILES.topLosses, pictures.topLosses);
  }
  const html = renderReportHtml({
    config: input.config,
    metrics,
    history: input.history,
    skipped: input.skipped,
    pictures,
    title: input.title ?? `finetune report: ${path.basename(path.resolve(out))}`,
    split: input.split,
  });
  await write(REPORT_FILES.html, html);
}

/** Removes the report files in `out` that are not in `kept` (missing ones are fine). */
async function removeReportFilesExcept(out: string, kept: readonly string[]): Promise<void> {
  const stale = Object.values(REPORT_FILES).filter((name) => !kept.includes(name));
  await Promise.all(stale.map((name) => fs.rm(path.join(out, name), { force: true })));
}

/**
 * The misclassified samples with the highest loss (−ln p(true class)), worst first.
 *
 * @param paths image file per sample
 * @param labels true class index per sample
 * @param probabilities row-major N × K class probabilities
 */
export function topLossItems(
  paths: readonly string[],
  labels: ArrayLike<number>,
  probabilities: Float32Array,
  classes: readonly string[],
  count = 16,
): TopLossItem[] {
  const k = classes.length;
  const items: TopLossItem[] = [];
  for (let i = 0; i < labels.length; i++) {
    const row = probabilities.subarray(i * k, (i + 1) * k);
    const predicted = argmax(row);
    const label = labels[i]!;
    if (predicted === label) continue;
    items.push({
      path: paths[i]!,
      trueLabel: classes[label]!,
      predicted: classes[predicted]!,
      probability: row[predicted]!,
      // Same floor as classificationMetrics, so a zero probability gives a finite loss.
      loss: -Math.log(Math.max(row[label]!, 1e-7)),
    });
  }
  return items.sort((a, b) => b.loss - a.loss || a.path.localeCompare(b.path)).slice(0, count);
}
