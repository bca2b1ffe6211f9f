/**
 * `finetune lr-find <data> [training options]`: the learning-rate range test (src/train/lr-find.ts)
 * on the data and model a run with the same options would train, writing lr-find.png and
 * lr-find.json and printing the suggested rate with the command line that uses it.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Command, Option } from 'commander';
import * as tf from '@tensorflow/tfjs';
import { resolveWeightsFile } from '../backbones/imagenet.js';
import { channelMean, withDatasetMean, type Preprocessing } from '../backbones/preprocess.js';
import { backbones, getBackbone } from '../backbones/registry.js';
import { loadBackboneWeights, seedRandomWeights } from '../backbones/weights.js';
import { assertOutsideData } from '../check/check.js';
import { loadImageData } from '../data/image-data.js';
import { discoverLayout } from '../data/layout.js';
import { RESIZE_MODES } from '../data/types.js';
import { storeImages } from '../data/pixel-store.js';
import { initEngine } from '../engine/backend.js';
import { UsageError } from '../errors.js';
import { DEFAULTS, resolveOptions, stageOneFit, type FineTuneOptions } from '../finetune.js';
import { writeFileAtomic } from '../io/atomic.js';
import type { Reporter } from '../reporter.js';
import { silentReporter } from '../reporter.js';
import { renderLrFind } from '../report/lr-find.js';
import { formatLr } from '../report/svg.js';
import { balancedClassWeights } from '../train/callbacks.js';
import { attachHead } from '../train/head.js';
import { lrRangeTest, type LrFindResult } from '../train/lr-find.js';
import { softmaxCrossEntropy } from '../train/loss.js';
import { unfreezeLayers } from '../train/trainable.js';
import { Trainer } from '../train/trainer.js';
import { STAGE1_METHODS, type UnfreezeSpec } from '../train/types.js';
import { BACKEND_CHOICES, integerArg, numberArg } from './predict.js';
import { consoleReporter } from './progress.js';

export const LR_FIND_FILES = { plot: 'lr-find.png', json: 'lr-find.json' } as const;

/** What `lr-find` takes: the training options that shape the data, model and loss, and the sweep's own. */
export type LrFindCommandOptions = Pick<
  FineTuneOptions,
  | 'data' | 'backbone' | 'alpha' | 'imageSize' | 'weights' | 'valSplit' | 'resize' | 'preprocess' | 'epochs' | 'lr' | 'batchSize'
  | 'dropout' | 'unfreeze' | 'unfreezeFrom' | 'trainBatchNorm' | 'cacheMb' | 'classWeight' | 'labelSmoothing' | 'seed' | 'backend'
  | 'stage1' | 'probeL2'
> & {
  /** 1: the head on the frozen backbone (default); 2: the layers stage 2 unfreezes, after `epochs` of stage 1. */
  stage?: number;
  startLr?: number;
  endLr?: number;
  steps?: number;
  /** Folder for lr-find.png and lr-find.json (default '.'). */
  out?: string;
  reporter?: Reporter;
};

export interface LrFindOutcome {
  result: LrFindResult;
  files: string[];
  /** The flag the suggestion is for: --lr (stage 1) or --fine-tune-lr (stage 2). */
  flag: '--lr' | '--fine-tune-lr';
}

/**
 * Builds the model and data as `fineTune` would (no augmentation: the sweep reads the cached frozen
 * features, so it costs only the trainable top), runs the range test, writes the plot and JSON.
 */
export async function findLearningRate(options: LrFindCommandOptions): Promise<LrFindOutcome> {
  const reporter = options.reporter ?? silentReporter;
  const stage = options.stage ?? 1;
  const out = options.out ?? '.';
  if (stage !== 1 && stage !== 2) throw new UsageError(`--stage ${stage} is not valid: use 1 (the head) or 2 (the unfrozen blocks)`);
  const steps = options.steps ?? 100;
  if (!Number.isInteger(steps) || steps < 10) throw new UsageError(`--steps ${steps} is not valid: use a whole number ≥ 10 (fastai: 100)`);
  const [startLr, endLr] = [options.startLr ?? 1e-7, options.endLr ?? 10];
  if (!(startLr > 0 && endLr > startLr)) throw new UsageError(`--start-lr ${startLr} and --end-lr ${endLr} are not valid: use 0 < start < end, e.g. 1e-7 and 10`);
  const spec = getBackbone(options.backbone ?? DEFAULTS.backbone);
  const opts = resolveOptions({ ...options, out, augment: 'none', fineTuneEpochs: stage === 2 ? 1 : 0 }, spec);
  if (stage === 2 && opts.weights === 'none') {
    throw new UsageError('--stage 2 sweeps the pretrained blocks stage 2 unfreezes; with --weights none every layer trains in one stage: use --stage 1.');
  }
  assertOutsideData(out, opts.data);
  await fs.mkdir(out, { recursive: true });

  const engine = await initEngine(opts.backend);
  reporter.info(`backend: ${engine.detail}`);
  const layout = await discoverLayout(path.resolve(opts.data), { valSplit: opts.valSplit, seed: opts.seed });
  const backbone = spec.build({ alpha: opts.alpha, imageSize: opts.imageSize, batchNormMomentum: opts.weights === 'none' ? 0.9 : undefined });
  const blocks = spec.blocks({ alpha: opts.alpha, imageSize: opts.imageSize });
  const stage2: UnfreezeSpec = opts.unfreezeFrom !== undefined ? { fromLayer: opts.unfreezeFrom } : { blocks: opts.unfreeze };
  if (stage === 2) unfreezeLayers(backbone, blocks, stage2); // a split that cannot work fails now
  if (opts.weights === 'none') {
    seedRandomWeights(backbone, opts.seed);
  } else {
    const file = await resolveWeightsFile(spec, opts, reporter);
    await loadBackboneWeights(backbone, file);
    reporter.info(`weights: ${file}`);
  }
  const task = reporter.task('decoding', layout.train.length + layout.valid.length, 'images');
  const data = await loadImageData(
    { ...layout, test: [], testLabelled: [] },
    { size: opts.imageSize, resize: opts.resize, cacheBytes: opts.cacheMb * 1024 ** 2, onProgress: (done) => task.update(done) },
  );
  task.finish(`decoded ${data.train.images.length} train, ${data.valid.images.length} validation images`);
  const model = attachHead(backbone, { numClasses: data.classes.length, dropout: opts.dropout, seed: opts.seed });
  const preprocessing: Preprocessing =
    opts.preprocess === 'dataset-mean' ? withDatasetMean(spec.preprocessing, channelMean(storeImages(data.train.images))) : spec.preprocessing;
  const trainer = new Trainer(model, blocks, data, preprocessing, {
    batchSize: opts.batchSize,
    augment: 'none',
    seed: opts.seed,
    loss: softmaxCrossEntropy({
      classWeights: opts.classWeight === 'auto' ? balancedClassWeights(data.train.labels, data.classes.length) : undefined,
      labelSmoothing: opts.labelSmoothing,
    }),
    trainBatchNorm: opts.trainBatchNorm || opts.weights === 'none',
    dropout: opts.dropout,
    cacheBytes: Math.max(0, opts.cacheMb * 1024 ** 2 - data.memoryBytes),
    log: (message) => reporter.info(message),
  });
  try {
    if (opts.weights === 'none') trainer.unfreeze({ blocks: Number.MAX_SAFE_INTEGER });
    if (stage === 2) {
      // Stage 2's rate matters for a trained head: a random one would dominate the loss.
      trainer.retainActivationsFor(stage2);
      const fit = stageOneFit(opts);
      reporter.info(
        `stage 1: ${fit.solve ? `solving the head (λ ${opts.probeL2})` : `training the head for ${opts.epochs} epochs (lr ${opts.lr})`} before sweeping stage 2's rate`,
      );
      await trainer.fit(opts.epochs, opts.lr, 1, fit);
      trainer.unfreeze(stage2);
    }
    reporter.info(`sweeping the learning rate from ${formatLr(startLr)} to ${formatLr(endLr)} over ${steps} steps (${stage === 1 ? 'the head' : 'stage 2'})`);
    const result = await lrRangeTest(trainer, { startLr, endLr, steps, stage });
    const flag = stage === 1 ? '--lr' : '--fine-tune-lr';
    const json = {
      format: 'finetune-lr-find/1',
      stage,
      trainable: stage === 1 ? 'head' : trainer.trainableLayers,
      backbone: { name: spec.name, alpha: opts.alpha, imageSize: opts.imageSize, weights: opts.weights },
      images: { train: data.train.images.length, valid: data.valid.images.length },
      sweep: result.options,
      diverged: result.diverged,
      suggestion: { ...result.suggestion, flag },
      alternatives: result.alternatives,
      points: result.lrs.map((lr, i) => ({ lr, loss: result.losses[i], smoothed: result.smoothed[i] })),
    };
    const files = [path.join(out, LR_FIND_FILES.plot), path.join(out, LR_FIND_FILES.json)];
    await writeFileAtomic(files[0]!, await renderLrFind(result));
    await writeFileAtomic(files[1]!, JSON.stringify(json, null, 2) + '\n');
    return { result, files, flag };
  } finally {
    trainer.dispose();
    model.dispose();
    data.dispose();
  }
}

/** Flags of lr-find's own, not passed on to the training command it suggests. */
const OWN_FLAGS = new Set(['stage', 'startLr', 'endLr', 'steps', 'out', 'quiet', 'verbose']);

export function lrFindCommand(): Command {
  return new Command('lr-find')
    .summary("the learning-rate range test: plot loss against an exponentially growing rate, suggest one (fastai's lr_find)")
    .description(
      'Train on batches while the learning rate grows exponentially (from --start-lr to --end-lr over --steps steps), and ' +
        'plot the smoothed loss against it; stop once the loss exceeds 4× its minimum. Suggests fastai\'s "valley" rate: two ' +
        'thirds of the way down the longest stretch where the loss keeps falling. Writes lr-find.png and lr-find.json into ' +
        '--out and prints the command line that trains with the rate. Stage 1 (the default) sweeps the head on the frozen ' +
        "backbone's cached features, without augmentation: seconds. The trained weights are thrown away.",
    )
    .argument('<data>', 'data folder, as for training')
    .addOption(new Option('--stage <n>', "1: the head's rate (--lr); 2: the unfrozen blocks' rate (--fine-tune-lr), after training the head for --epochs").choices(['1', '2']).default('1'))
    .option('--start-lr <rate>', 'first learning rate of the sweep', numberArg('--start-lr'), 1e-7)
    .option('--end-lr <rate>', 'last learning rate of the sweep', numberArg('--end-lr'), 10)
    .option('--steps <n>', 'steps of the sweep', integerArg('--steps', 10), 100)
    .option('-o, --out <dir>', 'folder for lr-find.png and lr-find.json (replaced if there)', '.')
    .addOption(new Option('--backbone <name>', 'backbone architecture').choices(Object.keys(backbones)).default(DEFAULTS.backbone))
    .option('--alpha <a>', 'MobileNetV2 width multiplier (default 1.0)', numberArg('--alpha'))
    .option('--image-size <px>', 'input size in pixels (default 224)', integerArg('--image-size', 1))
    .option('--weights <src>', "'imagenet', 'none', or a .h5 / tfjs model path", DEFAULTS.weights)
    .option('--val-split <f>', 'fraction of train held out when there is no valid/ folder', numberArg('--val-split'), DEFAULTS.valSplit)
    .addOption(new Option('--resize <mode>', 'fit images to the input').choices([...RESIZE_MODES]).default(DEFAULTS.resize))
    .addOption(new Option('--preprocess <how>', 'as for training').choices(['backbone', 'dataset-mean']).default(DEFAULTS.preprocess))
    .option('--batch-size <n>', 'images per step', integerArg('--batch-size', 1), DEFAULTS.batchSize)
    .option('--dropout <rate>', 'dropout before the classifier', numberArg('--dropout'), DEFAULTS.dropout)
    .addOption(new Option('--stage1 <how>', `with --stage 2: how the head is trained first, as for training (default: ${DEFAULTS.stage1})`).choices(STAGE1_METHODS))
    .option('--probe-l2 <l2>', 'with --stage 2 and --stage1 lbfgs: the L2 penalty of the solved head', numberArg('--probe-l2'), DEFAULTS.probeL2)
    .option('--epochs <n>', `with --stage 2: Adam epochs of stage 1 first; giving it means --stage1 adam (default ${DEFAULTS.epochs})`, integerArg('--epochs', 1))
    .option('--lr <rate>', 'with --stage 2: stage 1 learning rate', numberArg('--lr'), DEFAULTS.lr)
    .option('--unfreeze <n>', 'with --stage 2: top backbone blocks that train', integerArg('--unfreeze', 1), DEFAULTS.unfreeze)
    .option('--unfreeze-from <layer>', 'with --stage 2: train every layer from this one up')
    .option('--train-bn', 'with --stage 2: unfrozen BatchNormalization layers in training mode')
    .addOption(new Option('--class-weight <how>', 'balance the loss for imbalanced classes').choices(['auto', 'none']).default(DEFAULTS.classWeight))
    .option('--label-smoothing <e>', 'label smoothing ε for the loss', numberArg('--label-smoothing'), DEFAULTS.labelSmoothing)
    .option('--cache-mb <mib>', 'memory for decoded images and cached features', numberArg('--cache-mb'), DEFAULTS.cacheMb)
    .option('--seed <n>', 'seed for the split, data order and the head', integerArg('--seed'), DEFAULTS.seed)
    .addOption(new Option('--backend <name>', 'compute backend').choices(BACKEND_CHOICES).default(DEFAULTS.backend))
    .option('-q, --quiet', 'print only warnings, errors and the result')
    .option('--verbose', 'print stack traces with errors')
    .exitOverride()
    .action(async (data: string, flags: Record<string, unknown>, command: Command) => {
      const { trainBn, stage, ...rest } = flags;
      const reporter = consoleReporter({ quiet: flags.quiet === true });
      const outcome = await findLearningRate({
        ...(rest as Omit<LrFindCommandOptions, 'data' | 'stage'>),
        trainBatchNorm: trainBn === true,
        stage: Number(stage),
        data,
        reporter,
      });
      process.stdout.write(summary(outcome, suggestedCommand(data, command, outcome)) + '\n');
    });
}

/** `finetune <data>` with the training flags given to lr-find and the suggested rate. */
function suggestedCommand(data: string, command: Command, outcome: LrFindOutcome): string {
  const quote = (s: string) => (/^[\w./:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  const parts = ['finetune', quote(data)];
  for (const option of command.options) {
    const key = option.attributeName();
    if (OWN_FLAGS.has(key) || command.getOptionValueSource(key) !== 'cli') continue;
    if (outcome.flag === '--fine-tune-lr' || key !== 'lr') {
      const value = command.getOptionValue(key) as unknown;
      parts.push(option.long!, ...(value === true ? [] : [quote(String(value))]));
    }
  }
  parts.push(outcome.flag, formatLr(outcome.result.suggestion.lr));
  return parts.join(' ');
}

function summary(outcome: LrFindOutcome, command: string): string {
  const { result, files } = outcome;
  const last = result.lrs.at(-1)!;
  return [
    `lr-find: ${result.lrs.length} steps from ${formatLr(result.lrs[0]!)} to ${formatLr(last)}` +
      (result.diverged ? ` (stopped: the loss diverged at ${formatLr(last)})` : ''),
    `  suggested ${outcome.flag}: ${formatLr(result.suggestion.lr)} (fastai's valley); steepest descent at ${formatLr(result.alternatives.steepest)}, ` +
      `minimum/10 ${formatLr(result.alternatives.minimumOver10)}`,
    `  to use it: ${command}`,
    `  wrote ${files.map(shownPath).join(', ')}`,
  ].join('\n');
}

/** A path as short as it is clear: relative below the working directory, else absolute. */
function shownPath(file: string): string {
  const relative = path.relative(process.cwd(), file);
  return relative.startsWith('..') || path.isAbsolute(relative) ? path.resolve(file) : relative;
}
