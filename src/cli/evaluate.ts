import * as path from 'node:path';
import { Command, Option } from 'commander';
import { UsageError } from '../errors.js';
import { locateModel } from '../predict/classifier.js';
import { evaluate, evaluationTable, writeEvaluation, type EvaluateSplit } from '../predict/evaluate.js';
import { INFERENCE_ENGINES, type InferenceEngineRequest } from '../predict/onnx-engine.js';
import { BACKEND_CHOICES, ENGINE_HELP, integerArg } from './predict.js';
import { consoleReporter } from './progress.js';

interface EvaluateFlags {
  split?: EvaluateSplit;
  out: string;
  topK: number;
  tta?: boolean;
  batchSize: number;
  backend: 'auto' | 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
  engine: InferenceEngineRequest;
  quiet?: boolean;
  verbose?: boolean;
}

/** `finetune evaluate <model-dir> <labelled-dir>`: the table on stdout, metrics.json and errors.csv in --out. */
export function evaluateCommand(setStatus: (status: number) => void): Command {
  return new Command('evaluate')
    .summary('measure a trained model on labelled images')
    .description(
      'Measure a trained model on labelled images: prints a table, writes metrics.json and errors.csv\n' +
        '(the misclassified files, highest loss first) into --out.',
    )
    .argument('<model-dir>', 'the folder a training run wrote (holding finetune.json and model/), or its model/ folder')
    .argument('<labelled-dir>', 'a folder of class folders (<class>/*.jpg), or a training-layout folder (then see --split)')
    .addOption(
      new Option('--split <name>', 'in the training layout (train/, valid/, test/): the split to use (default: valid, else test)').choices([
        'valid',
        'test',
        'train',
      ]),
    )
    .option('-o, --out <dir>', 'folder for metrics.json and errors.csv', '.')
    .option('--top-k <k>', 'report top-1 … top-k accuracy (at most the number of classes)', integerArg('--top-k', 1), 5)
    .option('--tta', "test-time augmentation: average each image's prediction with its horizontal mirror's")
    .option('--batch-size <n>', 'images per model call', integerArg('--batch-size', 1), 32)
    .addOption(new Option('--engine <name>', ENGINE_HELP).choices(INFERENCE_ENGINES).default('auto'))
    .addOption(new Option('--backend <name>', 'tfjs compute backend').choices(BACKEND_CHOICES).default('auto'))
    .option('-q, --quiet', 'print only warnings, errors and the results')
    .option('--verbose', 'print stack traces with errors')
    .showHelpAfterError('(run finetune evaluate --help for every option)')
    .exitOverride()
    .action(async (modelDir: string, labelledDir: string, flags: EvaluateFlags) => {
      const reporter = consoleReporter({ quiet: flags.quiet ?? false });
      // Fail before the work, not after it: the run folder's metrics.json is training's own.
      if (path.resolve(flags.out) === (await locateModel(modelDir)).runDir) {
        throw new UsageError(`--out ${path.resolve(flags.out)} is the model's folder: its metrics.json holds the training run's own metrics. Choose another --out.`);
      }
      const result = await evaluate(modelDir, labelledDir, {
        split: flags.split,
        topK: flags.topK,
        tta: flags.tta ?? false,
        batchSize: flags.batchSize,
        backend: flags.backend,
        engine: flags.engine,
        reporter,
      });
      const written = await writeEvaluation(result, flags.out);
      process.stdout.write(evaluationTable(result));
      process.stderr.write(
        `finetune evaluate: ${result.files.length} images in ${result.seconds.toFixed(1)} s on ${result.inference.engine === 'onnx' ? 'ONNX Runtime' : 'tfjs'}; wrote ` +
          `${written.map((f) => path.relative(process.cwd(), f) || f).join(', ')} (${result.errors.length} misclassified)\n`,
      );
      setStatus(0);
    });
}
