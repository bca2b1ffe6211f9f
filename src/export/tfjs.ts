/**
 * `finetune export --format tfjs`: the run's model folder as a tfjs layers model (model.json, its
 * weights file and metadata.json), for symmetry with the other formats. A format-2 run's model/ is
 * copied byte for byte; a format-1 run's model gets its preprocessing layer added on the way, so
 * the export always takes raw RGB values 0–255.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { writeArtifactsDir } from '../io/model-io.js';
import { writeMetadataJson } from '../io/classifier-model.js';
import { takesRawPixels } from '../predict/classifier.js';
import { readRunModel, writeOutputAtomically } from './run-model.js';
import type { ExportContext, ExportFormat } from './types.js';

export const tfjsFormat: ExportFormat = {
  name: 'tfjs',
  description: 'TensorFlow.js layers model folder (tf.loadLayersModel) with Teachable Machine metadata.json; input raw RGB 0–255',
  defaultOut: 'tfjs/',
  async export(context: ExportContext): Promise<string[]> {
    const { location, config, artifacts } = await readRunModel(context.runDir);
    const info = { classes: config.classes, imageSize: config.input.size, resize: config.input.resize, preprocessing: config.input.preprocessing };
    const files = await writeOutputAtomically(context.out, async (tmp) => {
      if (takesRawPixels(config)) {
        await fs.cp(location.modelDir, tmp, { recursive: true });
        // Folders from before metadata.json was written get one.
        if (!(await fs.stat(path.join(tmp, 'metadata.json')).catch(() => undefined))) await writeMetadataJson(tmp, info);
      } else {
        await writeArtifactsDir(artifacts, tmp);
        await writeMetadataJson(tmp, info);
      }
      return (await fs.readdir(tmp)).filter((name) => !name.startsWith('.')).sort();
    });
    context.log(`wrote ${context.out}${path.sep} (tfjs layers model: ${files.join(', ')}; input: raw RGB 0–255)`);
    return files.map((name) => path.join(path.basename(context.out), name));
  },
};
