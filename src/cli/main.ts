import * as path from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { backbones } from '../backbones/registry.js';
import { FinetuneError, UsageError } from '../errors.js';
import { formatAccuracy } from '../train/metrics.js';
import { AUGMENT_LEVELS, RESIZE_MODES } from '../data/types.js';
import { formatFoldAccuracy } from '../train/cross-validate.js';
import { STAGE1_METHODS } from '../train/types.js';
import { DEFAULTS, fineTune, type FineTuneOptions, type FineTuneResult } from '../finetune.js';
import { cacheCommand } from './cache.js';
import { checkCommand } from './check.js';
import { doctorCommand } from './doctor.js';
import { evaluateCommand } from './evaluate.js';
import { exportCommand } from './export.js';
import { lrFindCommand } from './lr-find.js';
import { predictCommand } from './predict.js';
import { addRunsCommand } from './runs.js';
import { sweepCommand } from './sweep.js';
import { consoleReporter } from './progress.js';

const number = (flag: string) => (value: string) => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${flag} needs a number, got '${value}'.`);
  return n;
};

const integer = (flag: string) => (value: string) => {
  const n = number(flag)(value);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`${flag} needs a whole number, got '${value}'.`);
  return n;
};

/** The `finetune` command line. */
export function buildProgram(run: (options: FineTuneOptions & { quiet?: boolean; verbose?: boolean }) => Promise<void>): Command {
  const program = new Command('finetune');
  program
    .description(
      'Fine-tune an ImageNet-pretrained backbone on a folder of labelled images (train/<class>/…, valid/<class>/…, test/…),\n' +
        'then write the model, metrics and predictions for test/.',
    )
    .argument('<data>', 'data folder: train/<class>/*, optional valid|validation|val/<class>/*, optional test/[unknown/]*');
  addTrainingOptions(program)
    .option('-o, --out <dir>', 'output folder', DEFAULTS.out)
    .option('--overwrite', 'replace the outputs of an earlier run in --out')
    .option('--resume <dir>', 'continue the interrupted run in <dir> from its last completed epoch (give the same options)')
    .option('-q, --quiet', 'print only warnings, errors and the summary')
    .option('--verbose', 'print stack traces with errors')
    .showHelpAfterError('(run finetune --help for every option)')
    .action(async (data: string, flags: Record<string, unknown>, command: Command) => {
      const { resume, ...rest } = flags;
      const options = toFineTuneOptions(data, rest);
      if (typeof resume === 'string') {
        if (command.getOptionValueSource('out') === 'cli' && path.resolve(String(rest.out)) !== path.resolve(resume)) {
          throw new UsageError(`--resume ${resume} continues the run in that folder: drop --out ${String(rest.out)}.`);
        }
        options.out = resume;
        options.resume = true;
      }
      await run(options);
    });
  return program;
}

/**
 * The options that say what a run trains (not where it writes or how it talks), added to `command`.
 * Defined once for `finetune <data>` and `finetune sweep`, so every flag added here can be swept.
 */
export function addTrainingOptions(command: Command): Command {
  return command
    .addOption(new Option('--backbone <name>', 'backbone architecture').choices(Object.keys(backbones)).default(DEFAULTS.backbone))
    .option('--alpha <a>', 'MobileNetV2 width multiplier: 0.35, 0.5, 0.75, 1.0, 1.3, 1.4 (default 1.0)', number('--alpha'))
    .option('--image-size <px>', 'input size in pixels, ≥ 32 (default 224; Keras publishes MobileNetV2 weights for 96/128/160/192/224)', integer('--image-size'))
    .option('--weights <src>', "'imagenet' (cache, ~/.keras/models, or download), 'none', or a .h5 / tfjs model path", DEFAULTS.weights)
    .option('--val-split <f>', 'fraction of train held out for validation when there is no valid/ folder', number('--val-split'), DEFAULTS.valSplit)
    .addOption(new Option('--resize <mode>', 'fit images to the input: crop (short side to the size, then the centre square; as ImageNet models were evaluated), stretch (ignore the aspect ratio, as Keras), pad (letterbox)').choices([...RESIZE_MODES]).default(DEFAULTS.resize))
    .addOption(
      new Option('--preprocess <how>', "the backbone's own preprocessing, or subtract the training set's channel mean")
        .choices(['backbone', 'dataset-mean'])
        .default(DEFAULTS.preprocess),
    )
    .addOption(
      new Option(
        '--augment <level>',
        'training augmentation: light/strong: flip, rotation, shift, zoom, brightness/contrast; randaugment: flip + 2 of identity, auto-contrast, equalize, ' +
          'rotate, shear x/y, translate x/y, color, contrast, brightness, sharpness, posterize at magnitude 9/10',
      )
        .choices([...AUGMENT_LEVELS])
        .default(DEFAULTS.augment),
    )
    .option(
      '--augment-copies <k>',
      "with augmentation: compute the frozen layers' output once for K augmented copies of each image (fast epochs) instead of every epoch (0)",
      integer('--augment-copies'),
      DEFAULTS.augmentCopies,
    )
    .addOption(
      new Option(
        '--stage1 <how>',
        "how stage 1 trains the head on the frozen backbone: adam (--epochs epochs at --lr), or lbfgs (a linear probe: L2-regularised logistic regression on the frozen features, solved to convergence in seconds; stage 2 then fine-tunes from it, LP-FT); lbfgs solves on the --augment-copies copies if any, else on the images unaugmented (default: lbfgs; adam when --epochs is given or with --weights none)",
      ).choices(STAGE1_METHODS),
    )
    .option('--probe-l2 <l2>', "with --stage1 lbfgs: L2 penalty l2·‖W‖² on the head's kernel (Keras's l2 regularizer; larger: simpler head)", number('--probe-l2'), DEFAULTS.probeL2)
    .option('--epochs <n>', `stage 1 epochs of Adam (head on the frozen backbone; or of every layer with --weights none); giving it means --stage1 adam (default ${DEFAULTS.epochs})`, integer('--epochs'))
    .option('--lr <rate>', 'stage 1 learning rate (Adam; with the solved head it only sets --fine-tune-lr, a tenth of it)', number('--lr'), DEFAULTS.lr)
    .option('--batch-size <n>', 'images per training step', integer('--batch-size'), DEFAULTS.batchSize)
    .option('--dropout <rate>', 'dropout before the classifier', number('--dropout'), DEFAULTS.dropout)
    .option('--unfreeze <n>', 'stage 2: number of top backbone blocks to train', integer('--unfreeze'), DEFAULTS.unfreeze)
    .option('--unfreeze-from <layer>', 'stage 2: train every layer from this one up (instead of --unfreeze)')
    .option('--fine-tune-epochs <n>', 'stage 2 epochs; 0 skips stage 2', integer('--fine-tune-epochs'), DEFAULTS.fineTuneEpochs)
    .option('--fine-tune-lr <rate>', 'stage 2 learning rate (default: --lr / 10)', number('--fine-tune-lr'))
    .option('--train-bn', 'run unfrozen BatchNormalization layers in training mode (off: inference mode, as the Keras fine-tuning guide advises)')
    .option('--cache-mb <mib>', 'memory for decoded images; past it they go to a temporary file', number('--cache-mb'), DEFAULTS.cacheMb)
    .option('--disk-cache-mb <mib>', 'size cap of the cache kept between runs in $FINETUNE_HOME/cache (default: FINETUNE_DISK_CACHE_MB, else 4096)', number('--disk-cache-mb'))
    .option('--no-cache', 'neither read nor write the cache kept between runs (decoded images, frozen-layer outputs)')
    .option('--patience <n>', 'early stopping: epochs without validation-loss improvement (best weights restored)', integer('--patience'), DEFAULTS.patience)
    .option('--label-smoothing <e>', 'label smoothing ε for the loss: the target is 1 − ε on the label, ε/K on every class (0: none)', number('--label-smoothing'), DEFAULTS.labelSmoothing)
    .addOption(
      new Option('--lr-schedule <how>', 'learning rate within each stage: plateau (cut when validation stalls), cosine (decay to 0), one-cycle (warm up, then decay)')
        .choices(['plateau', 'cosine', 'one-cycle'])
        .default(DEFAULTS.lrSchedule),
    )
    .option('--warmup-epochs <n>', 'with --lr-schedule cosine: epochs of linear warm-up from lr/25 at the start of each stage', number('--warmup-epochs'), DEFAULTS.warmupEpochs)
    .option(
      '--folds <k>',
      'k-fold cross-validation over train + valid (stratified): reports each metric\'s mean ± sd over the folds, then writes a model trained on all of train + valid for the folds\' mean best epochs (0: off)',
      integer('--folds'),
      DEFAULTS.folds,
    )
    .option(
      '--mixup <alpha>',
      'mixup: mix each batch with itself shuffled, λ ~ Beta(α, α), targets mixed alike; mixes the frozen layers\' output (manifold mixup), not pixels (0: off)',
      number('--mixup'),
      DEFAULTS.mixup,
    )
    .option(
      '--cutmix <alpha>',
      'CutMix: paste a box of another training image (area 1 − λ, λ ~ Beta(α, α)), targets mixed by area; the frozen layers then run every batch (0: off)',
      number('--cutmix'),
      DEFAULTS.cutmix,
    )
    .option(
      '--ema <decay>',
      'keep an exponential moving average of the weights (decay per step, e.g. 0.99, ramped up over the first steps); validation, early stopping and the saved model use it (0: off)',
      number('--ema'),
      DEFAULTS.ema,
    )
    .option(
      '--layer-lr-decay <f>',
      "stage 2: the top unfrozen block trains at --fine-tune-lr, each block below at f× the one above (n blocks: fastai's slice(lr·f^(n−1), lr)); the head at --fine-tune-lr (1: one rate)",
      number('--layer-lr-decay'),
      DEFAULTS.layerLrDecay,
    )
    .addOption(new Option('--class-weight <how>', 'balance the loss for imbalanced classes').choices(['auto', 'none']).default(DEFAULTS.classWeight))
    .option('--seed <n>', 'seed for the split, data order, augmentation and initial weights', integer('--seed'), DEFAULTS.seed)
    .addOption(new Option('--backend <name>', 'compute backend').choices(['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu']).default(DEFAULTS.backend))
    .option('--export <formats>', 'after training, also export the model: a comma-separated list of finetune export formats (tfjs, keras, tm, onnx, web) into <out>/export/', (v: string) => v.split(',').map((f) => f.trim()).filter(Boolean));
}

/** Commander's parsed flags as fineTune's options. */
export function toFineTuneOptions(data: string, flags: Record<string, unknown>): FineTuneOptions & { quiet?: boolean; verbose?: boolean } {
  // Commander names options after their flags; the one whose flag is shorter than its field:
  const { trainBn, ...rest } = flags;
  return { ...(rest as Omit<FineTuneOptions, 'data'>), trainBatchNorm: trainBn === true, data };
}

function summary(result: FineTuneResult): string {
  const lines = [`finetune: done in ${result.seconds.toFixed(1)} s on ${result.engine.backend}`];
  const cv = result.crossValidation;
  if (cv) {
    lines.push(
      `  val accuracy ${formatFoldAccuracy(cv)}; loss ${cv.mean.loss!.toFixed(4)} ± ${cv.sd.loss!.toFixed(4)} ` +
        `(each image held out once; the model written trained on all of them for ${cv.epochs.stage1} + ${cv.epochs.stage2} epochs)`,
    );
  }
  if (result.metrics) {
    lines.push(`  validation accuracy ${formatAccuracy(result.metrics)}; loss ${result.metrics.loss.toFixed(4)}`);
  }
  if (result.testMetrics) {
    lines.push(`  test accuracy ${formatAccuracy(result.testMetrics)}; loss ${result.testMetrics.loss.toFixed(4)} (test/<class>/, not seen in training)`);
  }
  if (result.predictions.length > 0) lines.push(`  predicted ${result.predictions.length} test images`);
  if (result.skipped > 0) lines.push(`  skipped ${result.skipped} files (listed in skipped.csv)`);
  lines.push(`  outputs in ${result.out}: ${result.files.join(', ')}`);
  return lines.join('\n');
}

/**
 * Ctrl-C (or SIGTERM) once: training stops after the batch in flight and the run says how to
 * resume from its last saved epoch. Twice: exit at once; files on disk are whole either way,
 * since every write is a rename.
 */
export function interruptOnSignals(): { signal: AbortSignal; release: () => void } {
  const controller = new AbortController();
  const onSignal = (name: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      process.stderr.write(`\nfinetune: ${name} again: stopping now.\n`);
      process.exit(130);
    }
    process.stderr.write(`\nfinetune: ${name}: stopping after this batch (press Ctrl-C again to stop at once)\n`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    release: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** Runs the CLI; resolves to the process exit status (0 ok, 1 failed, 2 usage error, 130 interrupted). */
export async function main(argv: string[] = process.argv): Promise<number> {
  let verbose = argv.includes('--verbose');
  const program = buildProgram(async (options) => {
    verbose = options.verbose ?? false;
    const reporter = consoleReporter({ quiet: options.quiet ?? false });
    const interrupt = interruptOnSignals();
    try {
      const result = await fineTune({ ...options, reporter, signal: interrupt.signal });
      process.stdout.write(summary(result) + '\n');
    } finally {
      interrupt.release();
    }
  });
  program.exitOverride();
  // Subcommands take their own options (e.g. predict's --batch-size), so program options stop at them.
  let status = 0;
  const setStatus = (code: number) => (status = code);
  program
    .enablePositionalOptions()
    .addCommand(predictCommand(setStatus))
    .addCommand(evaluateCommand(setStatus))
    .addCommand(exportCommand(setStatus))
    .addCommand(checkCommand(setStatus))
    .addCommand(sweepCommand({ addTrainingOptions, toFineTuneOptions, interruptOnSignals }))
    .addCommand(lrFindCommand())
    .addCommand(doctorCommand())
    .addCommand(cacheCommand());
  addRunsCommand(program);
  try {
    await program.parseAsync(argv);
    return status;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander already printed the message (or the help / version text).
      return error.exitCode === 0 ? 0 : 2;
    }
    if (error instanceof FinetuneError) {
      process.stderr.write(`finetune: ${error.message}\n`);
      if (verbose && error.stack) process.stderr.write(error.stack + '\n');
      return error.exitCode;
    }
    process.stderr.write(`finetune: ${(error as Error).message ?? String(error)}\n`);
    if (verbose) process.stderr.write(((error as Error).stack ?? '') + '\n');
    else process.stderr.write('(run again with --verbose for the stack trace)\n');
    return 1;
  }
}
