import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** ../shared beside the repository (real weights and datasets), when this machine has it. */
export const sharedDir = path.resolve(repoRoot, '../shared');

export const tmWeightsDir = path.join(sharedDir, 'weights/teachable-machine-mobilenet_v2_0.35_224');

/** The shared Teachable Machine MobileNetV2 0.35 export, or undefined (with a note) when absent. */
export function sharedMobileNetWeights(): string | undefined {
  if (existsSync(path.join(tmWeightsDir, 'model.json'))) return tmWeightsDir;
  console.warn(`note: ${tmWeightsDir} is absent; using random backbone weights instead`);
  return undefined;
}
