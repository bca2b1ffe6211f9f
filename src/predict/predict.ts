/**
 * Batch labelling: a stream of files in, a stream of predictions out, one batch at a time.
 *
 *   inputs → expand (files, folders, patterns, stdin) → shard / skip → decode (worker thread, bounded
 *   queue, runs ahead while the model works) → model, batch by batch → predictions (+ sorting)
 *
 * Memory holds at most a few batches of pixels whatever the number of files, and no tensor outlives
 * its batch.
 */
import os from 'node:os';
import type { BackendRequest } from '../engine/backend.js';
import type { InferenceEngineRequest } from './onnx-engine.js';
import { UsageError } from '../errors.js';
import { silentReporter, type Reporter } from '../reporter.js';
import { Classifier, loadClassifier } from './classifier.js';
import { ImageDecoder } from './decoder.js';
import { emptyExpandStats, expandInputs, inShard, parseShard, type ExpandStats, type InputFile, type Shard } from './inputs.js';
import { checkLabelFolderName, Sorter, type SortOptions, type SortOutcome } from './sort.js';

export interface PredictOptions {
  /** Images per model call (default 32). */
  batchSize?: number;
  /** Average each image's prediction with its horizontal mirror's (test-time augmentation; 2× the work). */
  tta?: boolean;
  /** Also report the k most likely labels (default 0: none). */
  topK?: number;
  /** Below this top probability the label is `unknownLabel` (default 0: always a class). */
  threshold?: number;
  /** The label for images under `threshold` (default 'unknown'). */
  unknownLabel?: string;
  /** Compute backend when `model` is a folder (default 'auto'). */
  backend?: BackendRequest;
  /** Inference engine when `model` is a folder (default 'auto': ONNX Runtime when installed; see LoadClassifierOptions). */
  engine?: InferenceEngineRequest;
  /** Label only this part of the inputs: `{ index: 2, count: 4 }` or "2/4". */
  shard?: Shard | string;
  /** Leave out inputs this returns true for (e.g. files an earlier run labelled: --resume). */
  skip?: (input: InputFile) => boolean;
  /** Copy, move or link each labelled file into `<dir>/<label>/`. */
  sortInto?: SortOptions;
  /** What the input `-` reads (default process.stdin). */
  stdin?: NodeJS.ReadableStream;
  /** Progress and warnings (default: none). */
  reporter?: Reporter;
  /** Files read and decoded at once (default: the batch size, at most 64). */
  concurrency?: number;
  /** Counters, filled in while the predictions stream out. */
  stats?: PredictStats;
}

/** What happened to the inputs. */
export interface PredictStats {
  /** Files the inputs expanded to. */
  found: number;
  /** Left out by `shard`. */
  otherShards: number;
  /** Left out by `skip` (--resume). */
  skipped: number;
  /** Given a label (a class, or `unknownLabel`). */
  labelled: number;
  /** Of those, how many got `unknownLabel` (under the threshold). */
  unknown: number;
  /** Could not be read or decoded (error rows). */
  failed: number;
  /** Put into the sort folder (or planned, on a dry run). */
  sorted: number;
  /** Labelled but could not be put into the sort folder. */
  sortFailed: number;
  /** What expansion passed over (non-image files, hidden files, duplicates). */
  expand: ExpandStats;
  /** Wall-clock seconds so far. */
  seconds: number;
}

export const emptyPredictStats = (): PredictStats => ({
  found: 0,
  otherShards: 0,
  skipped: 0,
  labelled: 0,
  unknown: 0,
  failed: 0,
  sorted: 0,
  sortFailed: 0,
  expand: emptyExpandStats(),
  seconds: 0,
});

interface PredictionBase {
  /** The file as given (see InputFile.file). */
  file: string;
  /** Absolute path. */
  path: string;
  /** Where --sort-into put it; absent without sorting and for files that failed. */
  sorted?: SortOutcome;
}

/** A file the model labelled. */
export interface LabelledPrediction extends PredictionBase {
  /** The most likely class, or `unknownLabel` when its probability is under the threshold. */
  label: string;
  /** Index of the most likely class in the model's classes (also when the label is unknown). */
  classIndex: number;
  /** Probability of the most likely class. */
  confidence: number;
  /** Every class's probability, in the model's class order. */
  probabilities: Record<string, number>;
  /** The `topK` most likely classes, best first (only with topK > 0). */
  top?: { label: string; probability: number }[];
  error?: undefined;
}

/** A file that could not be read or decoded. */
export interface FailedPrediction extends PredictionBase {
  label: null;
  /** A short reason, e.g. "file not found" or "cannot decode: unsupported image format". */
  error: string;
}

export type Prediction = LabelledPrediction | FailedPrediction;

/** Inputs as `predict` takes them: paths, folders, glob patterns and `-` (stdin). */
export type PredictInputs = string | Iterable<string> | AsyncIterable<string>;

/**
 * Labels images with a model folder written by `finetune <data>` (or a loaded Classifier).
 *
 * Returns an async iterable of predictions, in input order, each batch as soon as the model is done
 * with it. A file that cannot be read gives a FailedPrediction and the run goes on. Breaking out of
 * the loop stops the work (and frees the model when it was loaded here).
 *
 * ```ts
 * for await (const p of predict('runs/pets', ['photos/'], { topK: 2 })) {
 *   console.log(p.file, p.label ?? p.error);
 * }
 * ```
 */
export async function* predict(model: string | Classifier, inputs: PredictInputs, options: PredictOptions = {}): AsyncGenerator<Prediction> {
  const started = performance.now();
  const reporter = options.reporter ?? silentReporter;
  const stats = options.stats ?? emptyPredictStats();
  const batchSize = options.batchSize ?? 32;
  const topK = options.topK ?? 0;
  const threshold = options.threshold ?? 0;
  const unknownLabel = options.unknownLabel ?? 'unknown';
  const shard = typeof options.shard === 'string' ? parseShard(options.shard) : options.shard;
  checkPredictOptions(options);
  const sorter = options.sortInto ? new Sorter(options.sortInto) : undefined;

  const classifier = typeof model === 'string' ? await loadClassifier(model, { backend: options.backend, engine: options.engine, reporter }) : model;
  const decoder = new ImageDecoder(classifier.size, classifier.resize);
  try {
    const classes = classifier.classes;
    checkPredictOptions(options, classes);
    const list = typeof inputs === 'string' ? [inputs] : inputs;
    const expanded = expandInputs(list, {
      stdin: options.stdin,
      exclude: sorter ? [sorter.dir] : [],
      onWarning: (m) => reporter.warn(m),
      stats: stats.expand,
    });
    const selected = select(expanded, shard, options.skip, stats);
    // Without stdin the list is finite and cheap to expand first (paths only): then progress has a total.
    let source: AsyncIterable<InputFile> = selected;
    let total = 0;
    if (Array.isArray(list) && !list.includes('-')) {
      const all: InputFile[] = [];
      for await (const f of selected) all.push(f);
      source = toAsync(all);
      total = all.length;
    }
    const task = reporter.task('labelling', total, 'images');
    let done = 0;
    const concurrency = Math.max(1, Math.min(options.concurrency ?? Math.min(batchSize, 64), 256));
    for await (const batch of decodedBatches(source, decoder, { batchSize, concurrency })) {
      const ok = batch.filter((d) => d.pixels !== undefined);
      const probs = await classifier.predictPixels(
        ok.map((d) => d.pixels!),
        { tta: options.tta ?? false },
      );
      let j = 0;
      const results: Prediction[] = [];
      for (const item of batch) {
        if (item.pixels === undefined) {
          stats.failed++;
          results.push({ file: item.input.file, path: item.input.path, label: null, error: item.error ?? 'cannot decode' });
          continue;
        }
        const row = probs.subarray(j * classes.length, (j + 1) * classes.length);
        j++;
        const p = labelRow(item.input, row, classes, { topK, threshold, unknownLabel });
        stats.labelled++;
        if (p.label === unknownLabel && p.confidence < threshold) stats.unknown++;
        if (sorter) {
          p.sorted = await sorter.place(p.path, p.label);
          if (p.sorted.error) stats.sortFailed++;
          else stats.sorted++;
        }
        results.push(p);
      }
      done += batch.length;
      stats.seconds = (performance.now() - started) / 1000;
      task.update(done, `${(done / Math.max(stats.seconds, 1e-3)).toFixed(1)} images/s`);
      yield* results;
    }
    task.finish();
    stats.seconds = (performance.now() - started) / 1000;
  } finally {
    await decoder.close();
    if (typeof model === 'string') classifier.dispose();
  }
}

/**
 * Throws a UsageError for an option value `predict` cannot use; with the model's classes, checks
 * `topK` too. (`predict` calls it; call it yourself to fail before opening outputs.)
 */
export function checkPredictOptions(options: PredictOptions, classes?: readonly string[]): void {
  const { batchSize = 32, threshold = 0, unknownLabel = 'unknown', topK = 0 } = options;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new UsageError(`--batch-size ${batchSize} is not valid: use a whole number ≥ 1.`);
  if (!(threshold >= 0 && threshold <= 1)) throw new UsageError(`--threshold ${threshold} is not valid: use a probability from 0 to 1, e.g. 0.8.`);
  if (unknownLabel === '') throw new UsageError('--unknown-label cannot be empty.');
  if (typeof options.shard === 'string') parseShard(options.shard);
  else if (options.shard !== undefined) parseShard(`${options.shard.index}/${options.shard.count}`);
  if (options.sortInto) checkLabelFolderName(unknownLabel, '--unknown-label');
  if (!Number.isInteger(topK) || topK < 0 || (classes !== undefined && topK > classes.length)) {
    throw new UsageError(`--top-k ${topK} is not valid: use 1 to the number of classes${classes ? ` (${classes.length})` : ''}.`);
  }
}

/** One labelled result from a probability row. */
export function labelRow(
  input: InputFile,
  row: ArrayLike<number>,
  classes: readonly string[],
  options: { topK: number; threshold: number; unknownLabel: string },
): LabelledPrediction {
  let best = 0;
  for (let c = 1; c < row.length; c++) if (row[c]! > row[best]!) best = c;
  const confidence = row[best]!;
  const probabilities: Record<string, number> = {};
  classes.forEach((name, c) => (probabilities[name] = row[c]!));
  const p: LabelledPrediction = {
    file: input.file,
    path: input.path,
    label: confidence < options.threshold ? options.unknownLabel : classes[best]!,
    classIndex: best,
    confidence,
    probabilities,
  };
  if (options.topK > 0) {
    p.top = Array.from(row, (probability, c) => ({ label: classes[c]!, probability, c }))
      .sort((a, b) => b.probability - a.probability || a.c - b.c)
      .slice(0, options.topK)
      .map(({ label, probability }) => ({ label, probability }));
  }
  return p;
}

async function* select(
  files: AsyncIterable<InputFile>,
  shard: Shard | undefined,
  skip: ((input: InputFile) => boolean) | undefined,
  stats: PredictStats,
): AsyncGenerator<InputFile> {
  for await (const f of files) {
    stats.found++;
    if (!inShard(f.file, shard)) stats.otherShards++;
    else if (skip?.(f)) stats.skipped++;
    else yield f;
  }
}

async function* toAsync<T>(items: T[]): AsyncGenerator<T> {
  // Hands the array over item by item and lets go of it as it goes.
  for (let i = 0; i < items.length; i++) {
    const item = items[i]!;
    (items as (T | undefined)[])[i] = undefined;
    yield item;
  }
}

// ---- the decode queue ------------------------------------------------------------------------------

/** A file with its pixels, or the reason it has none. */
export interface DecodedItem {
  input: InputFile;
  pixels?: Uint8Array;
  error?: string;
}

/** Wakes every waiter; waiting registers synchronously, so no wake-up is lost between check and wait. */
class Signal {
  private waiters: (() => void)[] = [];
  wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  fire(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const resolve of w) resolve();
  }
}

/**
 * Decodes files ahead of the model and hands them out in input order, `batchSize` at a time.
 *
 * A producer reads the source and starts decodes (at most `concurrency` at once) into a queue of at
 * most 2 × batchSize files; the consumer takes a batch and, while the caller runs the model on it,
 * the producer goes on filling the queue. When the source stalls (a slow stdin) a partial batch is
 * handed out after `idleFlushMs`, so results keep flowing.
 */
export async function* decodedBatches(
  source: AsyncIterable<InputFile>,
  decoder: ImageDecoder,
  options: { batchSize: number; concurrency?: number; idleFlushMs?: number },
): AsyncGenerator<DecodedItem[]> {
  const { batchSize } = options;
  const concurrency = options.concurrency ?? Math.max(4, os.availableParallelism());
  const capacity = 2 * batchSize;
  const idleFlushMs = options.idleFlushMs ?? 200;
  const queue: Promise<DecodedItem>[] = [];
  const items = new Signal();
  const space = new Signal();
  let active = 0;
  let finished = false;
  let failure: { error: unknown } | undefined;
  let stopped = false;
  let waitingSince: number | undefined; // set while the producer waits for the source
  const iterator = source[Symbol.asyncIterator]();

  const produce = async () => {
    try {
      for (;;) {
        while (!stopped && (queue.length >= capacity || active >= concurrency)) await space.wait();
        if (stopped) break;
        waitingSince = performance.now();
        const next = await iterator.next();
        waitingSince = undefined;
        if (next.done || stopped) break;
        const input = next.value;
        if (input.error !== undefined) {
          queue.push(Promise.resolve({ input, error: input.error }));
        } else {
          active++;
          queue.push(
            decoder.decode(input.path).then(
              (pixels): DecodedItem => ({ input, pixels }),
              (error: unknown): DecodedItem => ({ input, error: error instanceof Error ? error.message : String(error) }),
            ).finally(() => {
              active--;
              space.fire();
            }),
          );
        }
        items.fire();
      }
    } catch (error) {
      failure = { error };
    } finally {
      waitingSince = undefined;
      finished = true;
      items.fire();
    }
  };
  const producer = produce();

  try {
    for (;;) {
      while (!finished && queue.length < batchSize) {
        const stalled = waitingSince !== undefined && queue.length > 0;
        if (!stalled) {
          await items.wait();
          continue;
        }
        const wait = idleFlushMs - (performance.now() - waitingSince!);
        if (wait <= 0) break; // the source is slow: hand out what is there
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([items.wait(), new Promise<void>((resolve) => (timer = setTimeout(resolve, wait)))]);
        clearTimeout(timer);
      }
      if (queue.length === 0) {
        if (failure) throw failure.error;
        if (finished) return;
        continue;
      }
      const batch = queue.splice(0, batchSize);
      space.fire();
      yield await Promise.all(batch);
    }
  } finally {
    stopped = true;
    space.fire();
    if (!finished) void iterator.return?.(undefined); // e.g. stop reading stdin
    else await producer;
  }
}
