import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiskCache } from '../src/cache/disk-cache.js';
import { stageOneKey, type StageKeyParts } from '../src/cache/stage-result.js';
import { fineTune, type FineTuneOptions } from '../src/finetune.js';
import { InterruptedError } from '../src/errors.js';
import { repoRoot, needShared, sharedPath, TM_WEIGHTS } from './helpers/shared.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-stage-result-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the key of stage 1’s result', () => {
  const parts: StageKeyParts = {
    options: { lr: 0.001, epochs: 10, seed: 42, fineTuneLr: 0.0001, fineTuneEpochs: 5, layerLrDecay: 1, augment: 'light' },
    stage2: { blocks: 1 },
    classes: ['a', 'b'],
    train: { digests: ['d1', 'd2'], labels: [0, 1] },
    valid: { digests: ['d3'], labels: [1] },
    model: 'weights digest',
    preprocessing: { mode: 'tf' },
    engine: 'wasm, SIMD, 2 threads',
    tfjs: '4.22.0',
  };

  it('changes with every stage-1 option, the split point, the images, labels, weights, preprocessing and backend; not with stage-2 options', async () => {
    const base = await stageOneKey(parts);
    expect(await stageOneKey(structuredClone(parts))).toBe(base);
    for (const changed of [
      { options: { ...parts.options, lr: 0.002 } },
      { options: { ...parts.options, seed: 1 } },
      { options: { ...parts.options, augment: 'strong' } },
      { options: { ...parts.options, newFlag: 1 } }, // an option the key has never heard of still counts
      { stage2: { blocks: 2 } },
      { classes: ['a', 'c'] },
      { train: { digests: ['d1', 'dX'], labels: [0, 1] } },
      { train: { digests: ['d1', 'd2'], labels: [1, 1] } },
      { valid: { digests: ['d3'], labels: [0] } },
      { model: 'other weights' },
      { preprocessing: { mode: 'caffe' } },
      { engine: 'wasm, SIMD, 1 thread' },
      { tfjs: '4.21.0' },
    ] as Partial<StageKeyParts>[]) {
      expect(await stageOneKey({ ...parts, ...changed }), JSON.stringify(changed)).not.toBe(base);
    }
    for (const stage2Only of [{ fineTuneLr: 0.00005 }, { fineTuneEpochs: 8 }, { layerLrDecay: 0.5 }]) {
      expect(await stageOneKey({ ...parts, options: { ...parts.options, ...stage2Only } }), JSON.stringify(stage2Only)).toBe(base);
    }
  });
});

describe('fineTune reuses stage 1 (α=0.35 weights from ../shared)', () => {
  const run = async (name: string, extra: Partial<FineTuneOptions> = {}, data = path.join(repoRoot, 'fixtures/shapes')) => {
    const logs: string[] = [];
    const reporter = { info: (m: string) => logs.push(m), warn: (m: string) => logs.push(m), task: () => ({ update() {}, finish: (m: string) => logs.push(m) }) };
    const out = path.join(dir, name);
    await fineTune({
      data,
      out,
      alpha: 0.35,
      imageSize: 48,
      weights: sharedPath(TM_WEIGHTS),
      epochs: 3,
      fineTuneEpochs: 2,
      augmentCopies: 2,
      batchSize: 16,
      backend: 'wasm',
      reporter,
      ...extra,
    });
    const model = path.join(out, 'model');
    const weights = Buffer.concat(readdirSync(model).filter((f) => f.endsWith('.bin')).sort().map((f) => readFileSync(path.join(model, f))));
    const config = JSON.parse(readFileSync(path.join(out, 'finetune.json'), 'utf8')) as { results: Record<string, unknown> };
    const history = readFileSync(path.join(out, 'history.csv'), 'utf8');
    return { logs, weights, results: config.results, history };
  };
  const fromCache = (logs: string[]) => logs.some((m) => /^stage 1: from the cache \(/.test(m));
  const trainedStageOne = (logs: string[]) => logs.some((m) => /^stage 1 epoch 1:/.test(m));
  /** history.csv's rows of a stage, without the seconds each took. */
  const stageRows = (csv: string, stage: number) => {
    const [header, ...rows] = csv.trim().split('\n');
    const cols = header!.split(',');
    const seconds = cols.indexOf('seconds');
    return rows.map((r) => r.split(',')).filter((r) => r[cols.indexOf('stage')] === String(stage)).map((r) => r.filter((_, i) => i !== seconds).join(','));
  };

  it('the same stage 1 again comes from the cache with the same result; a stage-2 option alone still reuses it; other stage-1 options, seed or pixels do not', async (ctx) => {
    needShared(ctx, 'the stage-1 cache runs', TM_WEIGHTS);
    const cold = await run('cold');
    expect(fromCache(cold.logs)).toBe(false);
    expect(trainedStageOne(cold.logs)).toBe(true);
    expect((await new DiskCache().stats()).kinds.stage?.entries).toBe(1);

    const warm = await run('warm');
    expect(fromCache(warm.logs)).toBe(true);
    expect(trainedStageOne(warm.logs)).toBe(false);
    expect(warm.logs.some((m) => /^stage 2 epoch 1:/.test(m))).toBe(true);
    expect(warm.weights.equals(cold.weights)).toBe(true);
    expect(warm.results.stage1FromCache).toBe(true);
    expect(cold.results.stage1FromCache).toBeUndefined();
    expect(stageRows(warm.history, 1)).toEqual(stageRows(cold.history, 1));
    expect(stageRows(warm.history, 2)).toEqual(stageRows(cold.history, 2));
    // What a run without any cache computes.
    expect((await run('bypass', { cache: false })).weights.equals(cold.weights)).toBe(true);

    // A sweep over a stage-2 flag: stage 1 is shared, stage 2 differs, the result is the uncached one.
    const otherStage2 = await run('fine-tune-lr', { fineTuneLr: 0.0005 });
    expect(fromCache(otherStage2.logs)).toBe(true);
    expect(otherStage2.weights.equals(cold.weights)).toBe(false);
    expect(otherStage2.weights.equals((await run('fine-tune-lr-bypass', { fineTuneLr: 0.0005, cache: false })).weights)).toBe(true);

    for (const [name, extra] of [['lr', { lr: 0.002 }], ['seed', { seed: 7 }], ['copies', { augmentCopies: 3 }]] as const) {
      const other = await run(name, extra);
      expect(fromCache(other.logs), name).toBe(false);
      expect(trainedStageOne(other.logs), name).toBe(true);
    }

    // One training image's pixels changed (same file name, size and class): a miss.
    const edited = path.join(dir, 'shapes-edited');
    cpSync(path.join(repoRoot, 'fixtures/shapes'), edited, { recursive: true });
    const classDir = path.join(edited, 'train', readdirSync(path.join(edited, 'train')).sort()[0]!);
    const file = path.join(classDir, readdirSync(classDir).sort()[0]!);
    const flipped = await sharp(readFileSync(file)).flop().toBuffer();
    await sharp(flipped).toFile(file);
    const changed = await run('edited', {}, edited);
    expect(fromCache(changed.logs)).toBe(false);
  });

  it('a run interrupted in stage 2 after stage 1 came from the cache resumes with its own options', async (ctx) => {
    needShared(ctx, 'the stage-1 cache runs', TM_WEIGHTS);
    const options = { seed: 11, fineTuneLr: 0.0003, fineTuneEpochs: 3 };
    await run('first', { seed: 11 }); // stores stage 1 for seed 11
    const controller = new AbortController();
    const logs: string[] = [];
    const reporter = {
      info: (m: string) => {
        logs.push(m);
        // Stops after stage 2's first batch: the checkpoint on disk is then the one restored from the cache.
        if (/^stage 1: from the cache/.test(m)) controller.abort();
      },
      warn: (m: string) => logs.push(m),
      task: () => ({ update() {}, finish: (m: string) => logs.push(m) }),
    };
    const base: FineTuneOptions = {
      data: path.join(repoRoot, 'fixtures/shapes'),
      out: path.join(dir, 'interrupted'),
      alpha: 0.35,
      imageSize: 48,
      weights: sharedPath(TM_WEIGHTS),
      epochs: 3,
      augmentCopies: 2,
      batchSize: 16,
      backend: 'wasm',
      ...options,
    };
    await expect(fineTune({ ...base, reporter, signal: controller.signal })).rejects.toThrow(InterruptedError);
    expect(fromCache(logs)).toBe(true);
    expect(logs.some((m) => /^stage 2 epoch 1:/.test(m))).toBe(false);
    await fineTune({ ...base, resume: true });
    const resumed = readFileSync(path.join(dir, 'interrupted/model', readdirSync(path.join(dir, 'interrupted/model')).find((f) => f.endsWith('.bin'))!));
    const reference = await run('uninterrupted', { ...options, cache: false });
    expect(resumed.equals(reference.weights)).toBe(true);
  });
});
