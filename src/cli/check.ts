import * as path from 'node:path';
import { Command, Option } from 'commander';
import { backbones } from '../backbones/registry.js';
import { assertOutsideData, checkData, hasCrossSplitDuplicates } from '../check/check.js';
import { reportJson, summaryText, writeCheckOutputs } from '../check/report.js';
import { RESIZE_MODES, type ResizeMode } from '../data/types.js';
import type { BackendRequest } from '../engine/backend.js';
import { BACKEND_CHOICES, integerArg, numberArg } from './predict.js';
import { consoleReporter } from './progress.js';
import { DEFAULTS } from '../defaults.js';

/** `--strict`: the exit status when duplicates cross splits. */
export const STRICT_EXIT_STATUS = 4;

interface CheckFlags {
  backbone: string;
  alpha?: number;
  imageSize?: number;
  weights: string;
  resize: ResizeMode;
  valSplit: number;
  seed: number;
  json?: boolean;
  out?: string;
  strict?: boolean;
  batchSize: number;
  backend: BackendRequest;
  quiet?: boolean;
  verbose?: boolean;
}

/**
 * `finetune check <data>`: the summary on stdout (or the JSON with --json), check.json and
 * check.html in --out. Exit 0 when the check ran (findings are not errors); --strict: 4 when
 * duplicates cross splits.
 */
export function checkCommand(setStatus: (status: number) => void): Command {
  return new Command('check')
    .summary('look at a data folder before training: counts, duplicates, leakage, suspect labels')
    .description(
      'Read a data folder as training would and report: images per split and class and the imbalance, files that cannot\n' +
        'be decoded, tiny images, unusual colour modes and EXIF rotation, exact duplicates (within and across splits),\n' +
        'near-duplicates across splits (resized, re-encoded, cropped or brightened copies) and suspect labels (a k-fold\n' +
        "linear probe on the pretrained backbone's features). Never writes into the data folder.",
    )
    .argument('<data>', 'data folder, in the layout training reads (train/<class>/…, optional valid/<class>/…, test/…, or <class>/…)')
    .addOption(new Option('--backbone <name>', 'backbone whose features are compared').choices(Object.keys(backbones)).default(DEFAULTS.backbone))
    .option('--alpha <a>', 'MobileNetV2 width multiplier (default 1.0)', numberArg('--alpha'))
    .option('--image-size <px>', 'input size in pixels (default 224)', integerArg('--image-size', 1))
    .option('--weights <src>', "'imagenet' (cache, ~/.keras/models, or download) or a .h5 / tfjs model path", DEFAULTS.weights)
    .addOption(new Option('--resize <mode>', 'fit images to the input as training will').choices([...RESIZE_MODES]).default(DEFAULTS.resize))
    .option('--val-split <f>', 'fraction of train held out for validation when there is no valid/ folder (as training)', numberArg('--val-split'), DEFAULTS.valSplit)
    .option('--seed <n>', 'seed of that split (as training)', integerArg('--seed'), DEFAULTS.seed)
    .option('--json', 'print the whole report as JSON on stdout instead of the summary')
    .option('-o, --out <dir>', 'also write check.json and check.html (thumbnails of duplicates and suspects) into this folder')
    .option('--strict', `exit with status ${STRICT_EXIT_STATUS} when duplicates cross splits (for scripts and CI)`)
    .option('--batch-size <n>', 'images per backbone call', integerArg('--batch-size', 1), DEFAULTS.batchSize)
    .addOption(new Option('--backend <name>', 'compute backend').choices(BACKEND_CHOICES).default(DEFAULTS.backend))
    .option('-q, --quiet', 'print only warnings, errors and the results')
    .option('--verbose', 'print stack traces with errors')
    .exitOverride()
    .action(async (data: string, flags: CheckFlags) => {
      // Usage errors before any work.
      if (flags.out !== undefined) assertOutsideData(flags.out, data);
      const reporter = consoleReporter({ quiet: flags.quiet ?? false });
      const report = await checkData({
        data,
        backbone: flags.backbone,
        alpha: flags.alpha,
        imageSize: flags.imageSize,
        weights: flags.weights,
        resize: flags.resize,
        valSplit: flags.valSplit,
        seed: flags.seed,
        backend: flags.backend,
        batchSize: flags.batchSize,
        reporter,
      });
      process.stdout.write(flags.json ? reportJson(report) : summaryText(report));
      if (flags.out !== undefined) {
        const written = await writeCheckOutputs(report, flags.out);
        reporter.info(`wrote ${written.map((f) => path.relative(process.cwd(), f) || f).join(', ')}`);
      }
      setStatus(flags.strict && hasCrossSplitDuplicates(report) ? STRICT_EXIT_STATUS : 0);
    });
}
