import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadImageData } from '../src/data/image-data.js';
import { discoverLayout } from '../src/data/layout.js';
import { SpillingPixelStore } from '../src/data/pixel-store.js';
import { makeShapesDataset } from '../src/data/synthetic.js';
import { fineTune, type FineTuneOptions } from '../src/finetune.js';
import { sharedMobileNetWeights } from './helpers/shared.js';

let dir: string;
let data: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-memory-'));
  data = path.join(dir, 'data');
  await makeShapesDataset(data, { trainPerClass: 8, validPerClass: 4, testCount: 3, size: 64, seed: 9 });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('decoded images past the memory budget', () => {
  it('SpillingPixelStore keeps what fits in memory and the rest in a file it deletes', () => {
    const spillDir = mkdtempSync(path.join(dir, 'spill-'));
    const store = new SpillingPixelStore(12, 30, spillDir); // room for 2 images of 12 bytes
    const images = Array.from({ length: 5 }, (_, i) => Uint8Array.from({ length: 12 }, (_, j) => i * 16 + j));
    images.forEach((im) => store.push(im));
    expect(store.length).toBe(5);
    expect(store.spilledCount).toBe(3);
    expect(readdirSync(spillDir)).toHaveLength(1);
    images.forEach((im, i) => expect(store.get(i)).toEqual(im));
    expect(() => store.push(new Uint8Array(3))).toThrow(/12 bytes/);
    store.close();
    expect(readdirSync(spillDir)).toHaveLength(0);
  });

  it('loadImageData spills past the budget and gives the same pixels', async () => {
    const layout = await discoverLayout(data);
    const inMemory = await loadImageData(layout, { size: 32, resize: 'stretch' });
    const spillDir = mkdtempSync(path.join(dir, 'spill-'));
    const spilled = await loadImageData(layout, { size: 32, resize: 'stretch', cacheBytes: 5 * 32 * 32 * 3, spillDir });
    expect(inMemory.spilled).toBe(0);
    expect(spilled.spilled).toBe(layout.train.length + layout.valid.length + layout.test.length - 5);
    for (const split of ['train', 'valid', 'test'] as const) {
      expect(spilled[split].images.length).toBe(inMemory[split].images.length);
      for (let i = 0; i < inMemory[split].images.length; i++) expect(spilled[split].images.get(i)).toEqual(inMemory[split].images.get(i));
    }
    spilled.dispose();
    expect(readdirSync(spillDir)).toHaveLength(0);
  });

  it('a run whose images do not fit in --cache-mb trains to the same result', async () => {
    const options: FineTuneOptions = {
      data, backbone: 'mobilenetv2', alpha: 0.35, imageSize: 96, weights: sharedMobileNetWeights() ?? 'none',
      epochs: 2, fineTuneEpochs: 1, batchSize: 8, augment: 'light', seed: 3, backend: 'wasm',
    };
    const a = await fineTune({ ...options, out: path.join(dir, 'a') });
    const b = await fineTune({ ...options, out: path.join(dir, 'b'), cacheMb: 0.1 }); // ~3 images of 96×96×3
    expect(b.history.map((h) => h.loss)).toEqual(a.history.map((h) => h.loss));
    expect(readFileSync(path.join(dir, 'b/predictions.csv'), 'utf8')).toBe(readFileSync(path.join(dir, 'a/predictions.csv'), 'utf8'));
    expect(existsSync(path.join(dir, 'b/checkpoint'))).toBe(false);
  });
});
