/**
 * `finetune export --format web`: a folder that labels images in a browser, offline, opened by
 * double-clicking index.html (no server, no network):
 *
 *   index.html  the page: choose or drop images, see the top labels with their probabilities
 *   app.js      resizes each image as the run did (stretch / crop / pad) and runs the model
 *   model.js    the model (topology, weights as base64) and its metadata, as one script: browsers
 *               refuse fetch() of files next to a page opened from file://, but load scripts
 *   tf.min.js   TensorFlow.js's browser build, copied from the installed @tensorflow/tfjs
 *
 * The model takes raw RGB values 0–255 (readRunModel adds the preprocessing layer to runs from
 * before the model carried it), so the page does no arithmetic on pixels.
 */
import { promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { FinetuneError } from '../errors.js';
import { concatWeightData } from '../io/model-io.js';
import type { ModelConfig } from '../predict/classifier.js';
import { readRunModel, writeOutputAtomically } from './run-model.js';
import type { ExportContext, ExportFormat } from './types.js';
import { APP_JS, INDEX_HTML } from './web/page.js';

/** What the page knows about the model besides its weights. */
export interface WebMetadata {
  classes: string[];
  imageSize: number;
  resize: ModelConfig['input']['resize'];
  /** How many labels each image shows. */
  top: number;
  /** What the model takes: always raw RGB values, the preprocessing being its first layer. */
  input: 'rgb-0-255';
}

export const WEB_FILES = ['index.html', 'app.js', 'model.js', 'tf.min.js'] as const;

/** The browser build of the tfjs this finetune runs (same version, so the model loads as it does here). */
export function tfjsBrowserBuild(): string {
  const require = createRequire(import.meta.url);
  try {
    return require.resolve('@tensorflow/tfjs/dist/tf.min.js');
  } catch (error) {
    throw new FinetuneError(`cannot find @tensorflow/tfjs/dist/tf.min.js (the browser build the web export copies): reinstall finetune's dependencies (npm ci).`, {
      cause: error,
    });
  }
}

/** model.js: one assignment of a JSON object, so it loads from file:// with a plain <script>. */
export function modelScript(artifacts: tf.io.ModelArtifacts, metadata: WebMetadata): string {
  const weights = concatWeightData(artifacts.weightData);
  const payload = {
    metadata,
    modelTopology: artifacts.modelTopology,
    weightSpecs: artifacts.weightSpecs,
    weightData: Buffer.from(weights.buffer, weights.byteOffset, weights.byteLength).toString('base64'),
  };
  return `// The model exported by finetune (a tfjs layers model; weights base64-encoded), read by app.js.\nwindow.FINETUNE_MODEL = ${JSON.stringify(payload)};\n`;
}

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export const webFormat: ExportFormat = {
  name: 'web',
  description: 'a folder whose index.html labels images in the browser, offline (open it from disk; no server needed)',
  defaultOut: 'web/',
  async export(context: ExportContext): Promise<string[]> {
    const { config, artifacts } = await readRunModel(context.runDir);
    const metadata: WebMetadata = {
      classes: config.classes,
      imageSize: config.input.size,
      resize: config.input.resize,
      top: Math.min(5, config.classes.length),
      input: 'rgb-0-255',
    };
    const title = `Image classifier: ${config.classes.join(', ')}`;
    const tfjs = tfjsBrowserBuild();
    await writeOutputAtomically(context.out, async (tmp) => {
      await fs.mkdir(tmp, { recursive: true });
      await fs.writeFile(path.join(tmp, 'index.html'), INDEX_HTML.replaceAll('{{TITLE}}', escapeHtml(title)));
      await fs.writeFile(path.join(tmp, 'app.js'), APP_JS);
      await fs.writeFile(path.join(tmp, 'model.js'), modelScript(artifacts, metadata));
      await fs.copyFile(tfjs, path.join(tmp, 'tf.min.js'));
    });
    context.log(`wrote ${context.out}${path.sep} (open index.html in a browser: it labels images offline; ${WEB_FILES.join(', ')})`);
    return WEB_FILES.map((name) => path.join(path.basename(context.out), name));
  },
};
