/**
 * `finetune export --format onnx`: the run's model as one ONNX file (opset 13) for onnxruntime,
 * OpenCV's dnn module, TensorRT, Core ML tools and the like.
 *
 * Input `input`: raw RGB values 0–255, float32 [batch, size, size, 3] (NHWC, as the tfjs model
 * takes them; the preprocessing is the graph's first convolution). Output `probabilities`:
 * float32 [batch, classes]. The class names, image size and resize mode are in the file's
 * metadata_props, so the file alone is enough to label images.
 */
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import type * as tf from '@tensorflow/tfjs';
import { finetuneVersion } from '../io/teachable-machine.js';
import { layersModelToOnnx, ONNX_INPUT, ONNX_OUTPUT } from './onnx/convert.js';
import { OPSET } from './onnx/builder.js';
import { readRunModel, writeOutputAtomically } from './run-model.js';
import type { ExportContext, ExportFormat } from './types.js';
import type { ModelConfig } from '../predict/classifier.js';

/** metadata_props keys, each value a string (JSON where it is a list or an object). */
export const ONNX_METADATA_KEYS = {
  classes: 'classes',
  imageSize: 'image_size',
  resize: 'resize',
  input: 'input',
  finetuneFormat: 'finetune_format',
} as const;

/** What the metadata says about the input, in words a person reading the file understands. */
export function onnxInputDescription(size: number): string {
  return `${ONNX_INPUT}: float32 [batch, ${size}, ${size}, 3], RGB values 0-255 (NHWC), resized as "resize" says; ${ONNX_OUTPUT}: float32 [batch, classes]`;
}

/** The run's model as ONNX bytes (the model must take raw pixels; readRunModel makes sure of that). */
export function runModelToOnnx(artifacts: tf.io.ModelArtifacts, config: ModelConfig, producerVersion: string): Uint8Array {
  const size = config.input.size;
  return layersModelToOnnx(artifacts, {
    graphName: `finetune_${config.backbone?.name ?? 'model'}_${size}`,
    producerVersion,
    docString: `Image classifier fine-tuned by finetune. ${onnxInputDescription(size)}. Classes: ${config.classes.join(', ')}.`,
    metadata: {
      [ONNX_METADATA_KEYS.classes]: JSON.stringify(config.classes),
      [ONNX_METADATA_KEYS.imageSize]: String(size),
      [ONNX_METADATA_KEYS.resize]: config.input.resize,
      [ONNX_METADATA_KEYS.input]: onnxInputDescription(size),
      [ONNX_METADATA_KEYS.finetuneFormat]: config.format,
    },
  });
}

export const onnxFormat: ExportFormat = {
  name: 'onnx',
  description: `ONNX model (opset ${OPSET}) for onnxruntime and other runtimes; input raw RGB 0–255 NHWC, output probabilities; classes in its metadata`,
  defaultOut: 'model.onnx',
  async export(context: ExportContext): Promise<string[]> {
    const { config, artifacts } = await readRunModel(context.runDir);
    const bytes = runModelToOnnx(artifacts, config, finetuneVersion());
    await writeOutputAtomically(context.out, (tmp) => fs.writeFile(tmp, bytes));
    const mb = (bytes.byteLength / 1e6).toFixed(1);
    context.log(`wrote ${context.out} (ONNX opset ${OPSET}, ${mb} MB; input "${ONNX_INPUT}" raw RGB 0–255 [batch, ${config.input.size}, ${config.input.size}, 3], output "${ONNX_OUTPUT}")`);
    return [path.basename(context.out)];
  },
};
