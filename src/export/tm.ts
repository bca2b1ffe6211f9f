/**
 * `finetune export --format tm`: a folder that Teachable Machine's own library uses as it uses a
 * Teachable Machine export: `tmImage.load('…/model.json', '…/metadata.json')`, then
 * `predict(image)`.
 *
 * tmImage's predict() center-crops the image to a square, resizes it to metadata.imageSize and
 * feeds x/127 − 1 to the model (@teachablemachine/image src/utils/tf.ts `capture`). This export's
 * first layer (`preprocess`) therefore starts from x/127 − 1 instead of raw pixels: it undoes
 * TM's scaling (raw = (x + 1) × 127) and applies the backbone's preprocessing in one fixed 1×1
 * convolution. Everything else is the run's model, unchanged.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { writeArtifactsDir } from '../io/model-io.js';
import { preprocessingAffine, replacePreprocessingWeights, type InputScaling } from '../io/preprocess-layer.js';
import { teachableMachineMetadata } from '../io/teachable-machine.js';
import { readRunModel, writeOutputAtomically } from './run-model.js';
import type { ExportContext, ExportFormat } from './types.js';

/** What tmImage feeds: y = x/127 − 1, so x = 127·y + 127. */
export const TEACHABLE_MACHINE_INPUT: InputScaling = { scale: 127, offset: 127 };

export const tmFormat: ExportFormat = {
  name: 'tm',
  description: "Teachable Machine library folder (tmImage.load + predict): input scaled as tmImage does, x/127 − 1, center crop",
  defaultOut: 'tm/',
  async export(context: ExportContext): Promise<string[]> {
    const { config, artifacts } = await readRunModel(context.runDir);
    const { preprocessing, size, resize } = config.input;
    const tmArtifacts = replacePreprocessingWeights(artifacts, preprocessingAffine(preprocessing, TEACHABLE_MACHINE_INPUT));
    const metadata = teachableMachineMetadata({ classes: config.classes, imageSize: size, resize, preprocessing, input: 'teachable-machine' });
    const files = await writeOutputAtomically(context.out, async (tmp) => {
      await writeArtifactsDir(tmArtifacts, tmp);
      await writeFileAtomic(path.join(tmp, 'metadata.json'), JSON.stringify(metadata, null, 2) + '\n');
      return (await fs.readdir(tmp)).filter((name) => !name.startsWith('.')).sort();
    });
    if (resize !== 'crop') {
      context.log(`note: the model was trained with --resize ${resize}; tmImage always center-crops, so non-square images are seen differently than in training`);
    }
    context.log(`wrote ${context.out}${path.sep} (Teachable Machine library: tmImage.load(model.json, metadata.json); input: x/127 − 1)`);
    return files.map((name) => path.join(path.basename(context.out), name));
  },
};
