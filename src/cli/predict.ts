import * as path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { UsageError } from '../errors.js';
import { loadClassifier } from '../predict/classifier.js';
import { Formatter, kaggleId, OUTPUT_FORMATS, type OutputFormat } from '../predict/formats.js';
import { parseShard, type InputFile } from '../predict/inputs.js';
import { openOutputFile, partialPath, streamSink, type OpenedOutput, type OutputSink } from '../predict/output.js';
import { INFERENCE_ENGINES, type InferenceEngineName, type InferenceEngineRequest } from '../predict/onnx-engine.js';
import { checkPredictOptions, emptyPredictStats, predict, type PredictOptions, type PredictStats } from '../predict/predict.js';
import type { SortMode } from '../predict/sort.js';
import { consoleReporter } from './progress.js';

export const BACKEND_CHOICES = ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'];

/** --engine's help, shared by predict and evaluate. */
export const ENGINE_HELP =
  'what runs the model: onnx (ONNX Runtime; needs `npm install onnxruntime-node`), tfjs (on --backend), or auto (onnx when installed and tfjs has no GPU or native TensorFlow)';

/** Commander value parser for a number flag. */
export const numberArg = (flag: string) => (value: string) => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${flag} needs a number, got '${value}'.`);
  return n;
};

/** Commander value parser for a whole-number flag, at least `min`. */
export const integerArg =
  (flag: string, min = 0) =>
  (value: string) => {
    const n = numberArg(flag)(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${flag} needs a whole number ≥ ${min}, got '${value}'.`);
    return n;
  };

interface PredictFlags {
  format: OutputFormat;
  output?: string;
  probaOf?: string;
  topK?: number;
  threshold?: number;
  unknownLabel: string;
  tta?: boolean;
  sortInto?: string;
  copy?: boolean;
  move?: boolean;
  link?: boolean;
  dryRun?: boolean;
  shard?: string;
  resume?: boolean;
  batchSize: number;
  backend: 'auto' | 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
  engine: InferenceEngineRequest;
  quiet?: boolean;
  verbose?: boolean;
}

/** How many per-file problems are printed before the rest are only counted. */
const SHOWN_PROBLEMS = 10;

/**
 * `finetune predict <model-dir> <inputs...>`: results on stdout (or --output), everything else on
 * stderr. Calls `setStatus` with 0 (all labelled), 3 (some not) or 1 (none).
 */
export function predictCommand(setStatus: (status: number) => void): Command {
  return new Command('predict')
    .summary('label images with a trained model (results on stdout)')
    .description(
      'Label images with a trained model: one result per image on stdout (or --output), progress and messages on stderr.\n' +
        'Exit status: 0 every file labelled, 3 some could not be read, 1 none could, 2 usage error.',
    )
    .argument('<model-dir>', 'the folder a training run wrote (holding finetune.json and model/), or its model/ folder')
    .argument('<inputs...>', "image files, folders (recursive), glob patterns (quote them), or '-' to read one path per line from stdin")
    .addOption(new Option('--format <format>', 'output format').choices(OUTPUT_FORMATS).default('csv'))
    .option('-o, --output <file>', 'write results to this file (atomically, via <file>.partial) instead of stdout')
    .option('--proba-of <class>', "kaggle format: the label column holds this class's probability")
    .option('--top-k <k>', 'add the k most likely labels with their probabilities', integerArg('--top-k', 1))
    .option('--threshold <p>', 'below this top probability the label is --unknown-label', numberArg('--threshold'))
    .option('--unknown-label <name>', 'label for images under --threshold', 'unknown')
    .option('--tta', "test-time augmentation: average each image's prediction with its horizontal mirror's")
    .option('--sort-into <dir>', 'put each labelled file into <dir>/<label>/ (never overwriting: a clash gets name-1.ext, …)')
    .option('--copy', 'with --sort-into: copy the files (the default)')
    .option('--move', 'with --sort-into: move the files (same file system: rename; else copy, verify, then delete)')
    .option('--link', 'with --sort-into: make symbolic links to the files')
    .option('--dry-run', 'with --sort-into: only print where each file would go (on stderr)')
    .option('--shard <i/n>', 'label only the i-th of n disjoint parts of the inputs (by a hash of each path)')
    .option('--resume', 'skip files already labelled in --output (from a finished or an interrupted run)')
    .option('--batch-size <n>', 'images per model call', integerArg('--batch-size', 1), 32)
    .addOption(new Option('--engine <name>', ENGINE_HELP).choices(INFERENCE_ENGINES).default('auto'))
    .addOption(new Option('--backend <name>', 'tfjs compute backend').choices(BACKEND_CHOICES).default('auto'))
    .option('-q, --quiet', 'print only warnings, errors and the summary on stderr')
    .option('--verbose', 'print stack traces with errors')
    .showHelpAfterError('(run finetune predict --help for every option)')
    .exitOverride()
    .action(async (modelDir: string, inputs: string[], flags: PredictFlags) => {
      setStatus(await runPredict(modelDir, inputs, flags));
    });
}

async function runPredict(modelDir: string, inputs: string[], flags: PredictFlags): Promise<number> {
  const modes = (['copy', 'move', 'link'] as const).filter((m) => flags[m]);
  if (modes.length > 1) throw new UsageError(`choose one of --copy, --move and --link, not ${modes.map((m) => `--${m}`).join(' and ')}.`);
  if ((modes.length > 0 || flags.dryRun) && flags.sortInto === undefined) {
    throw new UsageError(`--${modes[0] ?? 'dry-run'} goes with --sort-into <dir>.`);
  }
  if (flags.resume && flags.output === undefined) {
    throw new UsageError('--resume needs --output <file>: it skips the files already labelled in that file.');
  }
  if (inputs.filter((i) => i === '-').length > 1) throw new UsageError("'-' (read paths from stdin) can be given only once.");
  const shard = flags.shard !== undefined ? parseShard(flags.shard) : undefined;
  const mode: SortMode = modes[0] ?? 'copy';

  const reporter = consoleReporter({ quiet: flags.quiet ?? false });
  const sortInto = flags.sortInto !== undefined ? { dir: flags.sortInto, mode, dryRun: flags.dryRun ?? false } : undefined;
  const options: PredictOptions = {
    batchSize: flags.batchSize,
    tta: flags.tta ?? false,
    topK: flags.topK ?? 0,
    threshold: flags.threshold ?? 0,
    unknownLabel: flags.unknownLabel,
    shard,
    sortInto,
    reporter,
  };
  checkPredictOptions(options);
  const classifier = await loadClassifier(modelDir, { backend: flags.backend, engine: flags.engine, reporter });
  const stats = emptyPredictStats();
  const output = flags.output !== undefined ? path.resolve(flags.output) : undefined;
  try {
    checkPredictOptions(options, classifier.classes);
    reporter.info(
      `model: ${classifier.location.runDir} (${classifier.classes.length} classes, ${classifier.size} px); ` +
        `engine: ${classifier.inference.detail} [${classifier.inference.reason}]`,
    );
    const formatter = new Formatter(flags.format, { classes: classifier.classes, topK: flags.topK ?? 0, probaOf: flags.probaOf });
    let opened: OpenedOutput | undefined;
    let sink: OutputSink;
    if (output !== undefined) {
      opened = await openOutputFile(output, formatter, { resume: flags.resume ?? false });
      sink = opened.sink;
      if (flags.resume) {
        reporter.info(
          `resuming: ${opened.carried} files already labelled in ${flags.output}` +
            (opened.retried > 0 ? `; ${opened.retried} that failed before are tried again` : ''),
        );
      }
    } else {
      sink = streamSink(process.stdout);
      await sink.write(formatter.begin());
    }
    const done = opened?.done;
    const skip = done && done.size > 0 ? (f: InputFile) => done.has(flags.format === 'kaggle' ? kaggleId(f.file) : f.file) : undefined;

    let problems = 0;
    const problem = (message: string) => {
      if (++problems <= SHOWN_PROBLEMS) reporter.warn(message);
    };
    try {
      const results = predict(classifier, inputs, { ...options, skip, stats });
      for await (const p of results) {
        await sink.write(formatter.record(p));
        if (p.error !== undefined) problem(`cannot label ${p.file}: ${p.error}`);
        else if (p.sorted?.error) problem(`cannot ${p.sorted.action} ${p.file} into ${p.sorted.destination}: ${p.sorted.error}`);
        else if (p.sorted?.dryRun) process.stderr.write(`${p.sorted.action} ${p.file} -> ${path.relative(process.cwd(), p.sorted.destination)}\n`);
      }
      await sink.write(formatter.end());
      await sink.commit();
    } catch (error) {
      await sink.abort();
      if (output !== undefined && stats.labelled > 0) {
        reporter.warn(`the results so far are in ${partialPath(output)}: run again with --resume to go on.`);
      }
      throw error;
    }
    if (problems > SHOWN_PROBLEMS) reporter.warn(`… and ${problems - SHOWN_PROBLEMS} more (see the error ${flags.format.startsWith('json') ? 'fields' : 'column'})`);
  } finally {
    classifier.dispose();
  }
  process.stderr.write(summary(stats, flags, shard, output, classifier.inference.engine) + '\n');
  if (stats.found === 0) return 1;
  if (stats.failed > 0) return stats.labelled > 0 ? 3 : 1;
  return stats.sortFailed > 0 ? 3 : 0;
}

const files = (n: number) => `${n} file${n === 1 ? '' : 's'}`;

function summary(
  s: PredictStats,
  flags: PredictFlags,
  shard: { index: number; count: number } | undefined,
  output: string | undefined,
  engine: InferenceEngineName,
): string {
  const lines: string[] = [];
  const rate = s.seconds > 0 ? `, ${((s.labelled + s.failed) / s.seconds).toFixed(1)} images/s on ${engine === 'onnx' ? 'ONNX Runtime' : 'tfjs'}` : '';
  lines.push(`finetune predict: labelled ${files(s.labelled)} in ${s.seconds.toFixed(1)} s${rate}`);
  if (s.unknown > 0) lines.push(`  ${s.unknown} of them under --threshold ${flags.threshold}: labelled ${flags.unknownLabel}`);
  if (s.failed > 0) {
    lines.push(
      flags.format === 'kaggle'
        ? `  ${files(s.failed)} could not be read (left out of the kaggle file; listed above)`
        : `  ${files(s.failed)} could not be read (rows with an error)`,
    );
  }
  if (s.found === 0) lines.push('  no files to label: check the paths (folders are searched for image files only)');
  if (shard) lines.push(`  shard ${shard.index}/${shard.count}: ${s.found - s.otherShards} of ${files(s.found)}`);
  if (s.skipped > 0) lines.push(`  ${files(s.skipped)} skipped: already labelled in ${flags.output} (--resume)`);
  if (flags.sortInto !== undefined) {
    const verb = flags.move ? 'moved' : flags.link ? 'linked' : 'copied';
    lines.push(
      flags.dryRun
        ? `  dry run: ${files(s.sorted)} would be ${verb} into ${flags.sortInto} (nothing was changed)`
        : `  ${files(s.sorted)} ${verb} into ${flags.sortInto}` + (s.sortFailed > 0 ? `; ${s.sortFailed} could not be (listed above)` : ''),
    );
  }
  const e = s.expand;
  const ignored = [
    e.notImage > 0 ? `${e.notImage} without an image extension` : '',
    e.hidden > 0 ? `${e.hidden} hidden` : '',
    e.duplicates > 0 ? `${e.duplicates} named twice` : '',
  ].filter(Boolean);
  if (ignored.length > 0) lines.push(`  passed over in folders and patterns: ${ignored.join(', ')}`);
  if (output !== undefined) lines.push(`  results in ${output}`);
  return lines.join('\n');
}
