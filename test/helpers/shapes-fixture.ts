import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll } from 'vitest';
import { mobileNetV2, mobileNetV2Blocks } from '../../src/backbones/mobilenet_v2.js';
import { MOBILENET_PREPROCESSING } from '../../src/backbones/preprocess.js';
import { seedRandomWeights } from '../../src/backbones/weights.js';
import { loadImageData, type ImageData } from '../../src/data/image-data.js';
import { discoverLayout } from '../../src/data/layout.js';
import { initEngine } from '../../src/engine/backend.js';
import { attachHead } from '../../src/train/head.js';
import { Trainer, type TrainerOptions } from '../../src/train/trainer.js';
import { repoRoot } from './shared.js';

/** fixtures/shapes: 3 classes of drawn shapes, 90 training and 30 validation images. */
export const SHAPES_DIR = path.join(repoRoot, 'fixtures/shapes');

/** fixtures/shapes decoded (stretched to `size`) and a temporary folder, for one test file. */
export interface ShapesFixture {
  readonly size: number;
  readonly data: ImageData;
  readonly dir: string;
}

/** Registers the file's beforeAll (WebAssembly backend, decode, temporary folder `prefix…`) and afterAll (free both). */
export function shapesFixture(size: number, prefix: string): ShapesFixture {
  const fixture = { size } as { size: number; data: ImageData; dir: string };
  beforeAll(async () => {
    await initEngine('wasm');
    fixture.data = await loadImageData(await discoverLayout(SHAPES_DIR), { size, resize: 'stretch' });
    fixture.dir = mkdtempSync(path.join(tmpdir(), prefix));
  });
  afterAll(() => {
    fixture.data.dispose();
    rmSync(fixture.dir, { recursive: true, force: true });
  });
  return fixture;
}

/**
 * A Trainer on the fixture's images with a random MobileNetV2 α=0.35 (seeded: the same backbone every
 * time) and a new head (dropout 0.2, initialised from `headSeed`), unaugmented, batches of 16: for
 * tests of arithmetic and wiring, where accuracy does not matter. `done()` frees trainer and model.
 */
export function randomShapesTrainer(
  fixture: ShapesFixture,
  options: TrainerOptions & { headSeed?: number } = {},
): { trainer: Trainer; model: tf.LayersModel; done: () => void } {
  const { headSeed = 1, ...trainerOptions } = options;
  const backbone = mobileNetV2({ alpha: 0.35, imageSize: fixture.size });
  seedRandomWeights(backbone, 5);
  const model = attachHead(backbone, { numClasses: fixture.data.classes.length, dropout: 0.2, seed: headSeed });
  const trainer = new Trainer(model, mobileNetV2Blocks(0.35), fixture.data, MOBILENET_PREPROCESSING, { augment: 'none', batchSize: 16, ...trainerOptions });
  return { trainer, model, done: () => (trainer.dispose(), model.dispose()) };
}
