import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { BenchReport } from '../bench/report.js';
import { needShared, repoRoot, sharedDir, sharedPath } from './helpers/shared.js';

const dir = mkdtempSync(path.join(tmpdir(), 'finetune-bench-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('npm', ['run', '--silent', 'bench', '--', ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

// Figures are not checked against thresholds: only that every measurement ran and gave one.
describe('npm run bench -- --quick', () => {
  it('measures decode, forward, training step and the staged fine-tune on wasm, and writes them as JSON', { timeout: 240_000 }, async () => {
    const out = path.join(dir, 'nested', 'bench.json');
    const { code, stdout, stderr } = await run(['--quick', '--backends', 'wasm', '--out', out]);
    expect(code, stderr.slice(-2000)).toBe(0);
    expect(stdout).toMatch(/\| backend +\| measurement +\| +figure \|/);

    const report = JSON.parse(readFileSync(out, 'utf8')) as BenchReport;
    expect(report.format).toBe('finetune-bench/1');
    expect(report.quick).toBe(true);
    expect(report.machine.cpuCount).toBeGreaterThan(0);
    expect(report.machine.totalMemoryBytes).toBeGreaterThan(0);
    expect(report.versions.tfjs).toMatch(/^\d+\.\d+/);

    expect(report.decode!.imagesDecoded).toBeGreaterThan(0);
    expect(report.decode!.failed).toBe(0);
    expect(report.decode!.imagesPerSecond).toBeGreaterThan(0);

    expect(report.backends.map((b) => b.name)).toEqual(['wasm']);
    const wasm = report.backends[0]!;
    expect(wasm.detail).toMatch(/^wasm/);
    for (const kind of ['forward', 'train'] as const) {
      expect(wasm[kind].map((r) => r.backbone)).toEqual(['mobilenetv2', 'vgg16']);
      for (const r of wasm[kind]) {
        expect(r.error, `${kind} ${r.model}`).toBeUndefined();
        expect(r.measurement).toBe(kind);
        expect(r.imagesPerSecond).toBeGreaterThan(0);
        expect(r.timing!.steps).toBeGreaterThanOrEqual(1);
        expect(r.timing!.seconds).toBeGreaterThan(0);
        expect(r.batch).toBeGreaterThanOrEqual(1);
      }
    }

    const staged = wasm.staged!;
    expect(wasm.stagedError).toBeUndefined();
    expect(staged.epochs).toEqual({ head: 10, fineTune: 5, unfreezeBlocks: 2 });
    expect(staged.cached.cacheBytes).toBe('default');
    expect(staged.uncached.cacheBytes).toBe(0);
    for (const r of [staged.cached, staged.uncached]) {
      expect(r.seconds).toBeGreaterThan(0);
      expect(r.epochSeconds).toHaveLength(15);
    }
    expect(staged.ratio).toBeGreaterThan(0);
    // Same seed and initial weights: the cache changes where features come from, not what is learned.
    expect(staged.maxWeightDiff).toBeLessThanOrEqual(1e-4);
    expect(staged.uncached.valAccuracy).toBeCloseTo(staged.cached.valAccuracy, 6);
  });

  it('rejects an unknown measurement, naming the allowed ones', { timeout: 60_000 }, async () => {
    const { code, stderr } = await run(['--only', 'decode,speed']);
    expect(code).toBe(2);
    expect(stderr).toMatch(/--only speed: use decode, forward, train, staged, accuracy/);
  });
});

describe('npm run bench -- --only cache', () => {
  it('runs the same finetune command cold and warm: the warm run reads everything from the cache and saves the same weights', { timeout: 240_000 }, async () => {
    const out = path.join(dir, 'cache.json');
    const { code, stdout, stderr } = await run(['--quick', '--backends', 'wasm', '--only', 'cache', '--out', out]);
    expect(code, stderr.slice(-2000)).toBe(0);
    const report = JSON.parse(readFileSync(out, 'utf8')) as BenchReport;
    const [result] = report.backends[0]!.cache!;
    expect(result!.identicalWeights).toBe(true);
    const counted = result!.warm.cacheLines.filter((l) => / of \d+ from the cache/.test(l));
    expect(counted.length).toBeGreaterThanOrEqual(2); // decoded images, stage 2's frozen outputs
    for (const line of counted) expect(line).toMatch(/: (\d+) of \1 from the cache/);
    expect(result!.warm.cacheLines.some((l) => /stage 1: from the cache/.test(l))).toBe(true);
    expect(result!.cold.cacheLines.some((l) => /decoded images: 0 of \d+ from the cache/.test(l))).toBe(true);
    for (const run of [result!.cold, result!.warm]) expect(run.cpuSeconds).toBeGreaterThan(0);
    expect(stdout).toMatch(/cache \(wasm\): .*--augment-copies 4/);
    expect(stdout).toMatch(/weights byte-identical/);
  });
});

describe('npm run bench -- --only accuracy', () => {
  it('runs fineTune once per seed and reports each run and the mean ± sd, in the table and the JSON', { timeout: 240_000 }, async () => {
    const out = path.join(dir, 'accuracy.json');
    const { code, stdout, stderr } = await run(['--quick', '--backends', 'wasm', '--only', 'accuracy', '--seeds', '3,4', '--recipe', 'augment=none', '--out', out]);
    expect(code, stderr.slice(-2000)).toBe(0);

    const report = JSON.parse(readFileSync(out, 'utf8')) as BenchReport;
    const configs = report.backends[0]!.accuracy!;
    expect(configs).toHaveLength(1);
    const c = configs[0]!;
    expect(c.failures).toEqual([]);
    expect(c.dataset.name).toBe('shapes');
    expect(c.recipe.label).toBe('image-size=64,epochs=2,fine-tune-epochs=1,augment=none');
    expect(c.options).toMatchObject({ alpha: 0.35, imageSize: 64, augment: 'none', epochs: 2, fineTuneEpochs: 1 });
    expect(c.runs.map((r) => r.seed)).toEqual([3, 4]);
    for (const r of c.runs) {
      expect(r.valImages).toBe(30); // fixtures/shapes/valid
      expect(r.valAccuracy).toBeCloseTo(r.correct / r.valImages, 4);
      expect(r.valLoss).toBeGreaterThan(0);
      expect(r.seconds).toBeGreaterThan(0);
      // Pretrained weights: head then fine-tuning; random ones (no ../shared) train in one stage.
      expect(r.epochsRun.length).toBe(c.weights === 'none' ? 1 : 2);
    }
    const accuracies = c.runs.map((r) => r.valAccuracy);
    const mean = (accuracies[0]! + accuracies[1]!) / 2;
    expect(c.valAccuracy!.mean).toBeCloseTo(mean, 4);
    expect(c.valAccuracy!.sd).toBeCloseTo(Math.abs(accuracies[0]! - accuracies[1]!) / Math.SQRT2, 4);
    expect(c.valAccuracy!.min).toBe(Math.min(...accuracies));

    const cell = (text: string) => text.replace(/[().]/g, '\\$&');
    expect(stdout).toMatch(new RegExp(`seed 3 +\\| +${cell(`${accuracies[0]!.toFixed(3)} (${c.runs[0]!.correct}/30)`)} \\|`));
    expect(stdout).toMatch(new RegExp(`2 seeds: mean ± sd +\\| +${cell(`${mean.toFixed(3)} ± ${c.valAccuracy!.sd.toFixed(3)}`)} \\|`));
  });

  it('refuses a recipe fineTune would refuse, before measuring anything (exit status 2)', { timeout: 60_000 }, async () => {
    const bad = await run(['--only', 'accuracy', '--recipe', 'augment-copies=2,augment=none']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--augment-copies 2 needs augmentation/);
    const unknown = await run(['--only', 'accuracy', '--recipe', 'epoch=3']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/'epoch=3': the recipe options are image-size, .*augment-copies, epochs/);
  });
});

describe('npm run bench (full sizes)', () => {
  it('chooses each training size and batch up front and stops a measurement at its time limit', { timeout: 120_000 }, async () => {
    const out = path.join(dir, 'limits.json');
    // A 1 s limit stops every measuring process while it starts: what is checked is the plan and the stop.
    const { code, stdout } = await run(['--backends', 'wasm', '--only', 'train', '--time-limit', '1', '--out', out]);
    expect(code).toBe(1);
    const train = (JSON.parse(readFileSync(out, 'utf8')) as BenchReport).backends[0]!.train;
    expect(train.map((r) => [r.model, r.batch])).toEqual([
      ['MobileNetV2 α=1.0 224 px', 16],
      ['VGG16 112 px', 8],
    ]);
    for (const r of train) {
      expect(r.error).toBe('stopped at its time limit of 1 s (--time-limit to change)');
      // Stopped, not retried at a smaller batch.
      expect(r.requestedBatch).toBe(r.batch);
    }
    expect(stdout).toMatch(/\| wasm +\| VGG16 112 px training step +\| +failed \| batch 8: stopped at its time limit of 1 s/);
  });
});

describe('npm run bench -- --only predict-engines', () => {
  it('times finetune predict processes on each engine, same images, and writes them as JSON', { timeout: 240_000 }, async () => {
    const { initEngine } = await import('../src/engine/backend.js');
    const { writeExportRun } = await import('./helpers/export-run.js');
    await initEngine('wasm');
    const model = await writeExportRun(path.join(dir, 'engines-run'), { backbone: 'mobilenetv2', alpha: 0.35, imageSize: 64, classes: ['circle', 'square', 'triangle'], seed: 2 });
    const images = path.join(repoRoot, 'fixtures/shapes/valid');
    const out = path.join(dir, 'engines.json');
    const { code, stdout, stderr } = await run(['--only', 'predict-engines', '--predict-runs', model, '--predict-images', images, '--predict-rounds', '1', '--out', out]);
    expect(code, stderr.slice(-2000)).toBe(0);
    expect(stdout).toMatch(/onnx \/ tfjs: labelling [\d.]+×, process [\d.]+×, CPU seconds [\d.]+×/);
    const report = JSON.parse(readFileSync(out, 'utf8')) as BenchReport;
    expect(report.backends).toEqual([]);
    const rows = report.predictEngines!;
    expect(rows.map((r) => [r.model, r.images, r.engine])).toEqual([
      ['engines-run', 'valid', 'tfjs'],
      ['engines-run', 'valid', 'onnx'],
    ]);
    for (const r of rows) {
      expect(r.files).toBeGreaterThan(10);
      for (const list of [r.labellingImagesPerSecond, r.processImagesPerSecond, r.wallSeconds, r.cpuSeconds, r.peakMiB]) {
        expect(list).toHaveLength(1);
        expect(list[0]).toBeGreaterThan(0);
      }
    }
    expect(rows[0]!.engineLine).toMatch(/^tfjs wasm/);
    expect(rows[1]!.engineLine).toMatch(/^onnxruntime-node /);
  });
});

describe('--accuracy-data flowers[:N]', () => {
  it('links the first N files by name of each flowers class into one folder, the same folder each time', async (ctx) => {
    needShared(ctx, 'the flowers subset', 'datasets/flowers_kaggle_128');
    const { resolveStagedData } = await import('../bench/staged.js');
    const data = resolveStagedData('flowers:3', sharedDir, repoRoot);
    expect(data.name).toBe('flowers (3 per class)');
    const classes = readdirSync(data.root).sort();
    expect(classes).toEqual(['daisy', 'dandelion', 'rose', 'sunflower', 'tulip']);
    for (const c of classes) {
      const source = readdirSync(sharedPath(`datasets/flowers_kaggle_128/${c}`)).sort().slice(0, 3);
      expect(readdirSync(path.join(data.root, c)).sort()).toEqual(source);
    }
    expect(resolveStagedData('flowers:3', sharedDir, repoRoot).root).toBe(data.root); // a second call reuses it
  });
});
