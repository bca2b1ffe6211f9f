/**
 * The one-shot device check: on a machine with a real GPU, in one run of a few minutes, everything
 * the WebGPU work needs measured there, written to one JSON file.
 *
 *   bench/gpu-check-pack                      # here: builds .gpu/ (../shared/tools/gpu-pack) with the data
 *   bash .gpu/run.sh [--quick] [--out DIR]    # there, from the repo root; writes DIR/gpu-check.json
 *   npx vite-node --config bench/vite.config.ts bench/gpu-check.ts -- --quick   # here, unpacked
 *
 * In order (each step's result is written as soon as it is known; steps past `--budget` seconds
 * are skipped and say so):
 *   doctor    `finetune doctor`'s report (its WebGPU speed probe only);
 *   engine    initEngine('webgpu'): the adapter, and finetune's kernel replacements that failed
 *             their start-up check against tfjs (none expected);
 *   kernels   the training ops that are not replacements (convBatchNormActivation, WebGPUAdam)
 *             against the cpu backend;
 *   counts    dispatches, reads and buffer allocations per MobileNetV2 α=1.0 training step at
 *             224 px, batch 32, every layer and stage 2, as shipped and with separate ops (the
 *             step before the fused units and WebGPUAdam);
 *   speed     forward and training images/s at 224 px, batch 32: MobileNetV2 α=1.0 and 0.35,
 *             VGG16 (bench/model-speed.ts, as `npm run bench`), plus MobileNetV2 α=1.0 training
 *             through the Trainer as shipped and with separate ops (the wall-time effect);
 *   staged    the staged hymenoptera fine-tune (bench/staged.ts: MobileNetV2 α=0.35 with the
 *             Teachable Machine weights, with and without the activation cache).
 * --quick: tiny sizes and few steps, a smoke test of the whole (e.g. on lavapipe).
 *
 * Data and weights: in the gpu-pack bundle, from its extra/.gpu-check/data/ (gpu-check-pack puts a
 * copy of hymenoptera, shorter side 256 px, and the weights there); unpacked, from ../shared.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { doctor, formatDoctor } from '../src/cli/doctor.js';
import { initEngine } from '../src/engine/backend.js';
import { getBackbone } from '../src/backbones/registry.js';
import type { ImageSet } from '../src/data/batches.js';
import { MemoryPixelStore } from '../src/data/pixel-store.js';
import { attachHead } from '../src/train/head.js';
import { fusedAdam } from '../src/train/train-step.js';
import { Trainer } from '../src/train/trainer.js';
import { measureCounts, type CountsResult } from './counts.js';
import { checkTrainingOps } from './gpu-check-kernels.js';
import { round, summarise, type StepTiming } from './measure.js';
import { measureOnce, modelLabel, type ModelConfig, type SpeedKind } from './model-speed.js';
import { withSeparateOpsRunTop } from './separate-ops-top.js';
import { benchStaged, type StagedResult } from './staged.js';

interface Options {
  quick: boolean;
  out: string;
  budgetSeconds: number;
  data: string;
  weights: string;
}

const log = (line: string) => console.error(line);

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv.filter((a) => a !== '--'),
    options: {
      quick: { type: 'boolean', default: false },
      out: { type: 'string' },
      budget: { type: 'string', default: '360' },
      data: { type: 'string' },
      weights: { type: 'string' },
    },
    strict: true,
  });
  const budgetSeconds = Number(values.budget);
  if (!(budgetSeconds > 0)) {
    console.error(`gpu-check: --budget must be a number of seconds > 0, got ${values.budget}`);
    process.exit(2);
  }
  // In the gpu-pack bundle the extra paths sit under FINETUNE_GPU_EXTRA; unpacked, ../shared is beside the repo.
  const extra = process.env.FINETUNE_GPU_EXTRA;
  const packed = (p: string) => (extra ? path.join(extra, '.gpu-check/data', p) : undefined);
  return {
    quick: values.quick!,
    out: path.resolve(values.out ?? process.env.OUT ?? 'gpu-check-out'),
    budgetSeconds,
    data: path.resolve(values.data ?? packed('hymenoptera_data') ?? '../shared/datasets/hymenoptera_data'),
    weights: path.resolve(values.weights ?? packed('teachable-machine-mobilenet_v2_0.35_224') ?? '../shared/weights/teachable-machine-mobilenet_v2_0.35_224'),
  };
}

/**
 * In the gpu-pack bundle, tfjs-backend-webgpu is inside the bundle, not in node_modules, so the
 * engine's probe (which checks the package is installed, then imports it) would not find it:
 * register the bundled backend now and leave an empty stand-in package beside the bundle.
 */
async function prepareBundledWebgpu(): Promise<void> {
  if (!process.env.FINETUNE_GPU_EXTRA) return;
  const standIn = path.join(path.dirname(process.argv[1]!), 'node_modules/@tensorflow/tfjs-backend-webgpu');
  if (!existsSync(path.join(standIn, 'package.json'))) {
    mkdirSync(standIn, { recursive: true });
    writeFileSync(path.join(standIn, 'package.json'), JSON.stringify({ name: '@tensorflow/tfjs-backend-webgpu', version: tf.version.tfjs, main: 'index.js' }));
    writeFileSync(path.join(standIn, 'index.js'), '// The backend is registered by the bundle that wrote this.\nmodule.exports = {};\n');
  }
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  const webgpu = (await import('webgpu')) as unknown as { create(o: string[]): unknown; globals: Record<string, unknown> };
  for (const [k, v] of Object.entries(webgpu.globals)) {
    if (!(k in globalThis)) Object.defineProperty(globalThis, k, { value: v, writable: true, configurable: true });
  }
  const gpu = webgpu.create([]);
  const g = globalThis as { navigator?: { gpu?: unknown } };
  if (g.navigator) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true, writable: true });
  else Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  await import('@tensorflow/tfjs-backend-webgpu'); // registers 'webgpu' in the bundled tfjs
}

interface SpeedRow {
  measurement: SpeedKind;
  model: string;
  variant: 'shipped' | 'separate-ops';
  batch: number;
  imagesPerSecond?: number;
  timing?: StepTiming;
  error?: string;
}

/** Training images/s through the Trainer (one-batch set, one epoch a step, loss read back), as shipped or with separate ops. */
async function trainingSpeed(config: ModelConfig, batch: number, steps: number, variant: 'shipped' | 'separate-ops'): Promise<SpeedRow> {
  const spec = getBackbone(config.backbone);
  const options = { alpha: config.alpha ?? 1, imageSize: config.imageSize };
  const model = attachHead(spec.build(options), { numClasses: 10, dropout: 0.2, seed: 1 });
  const n = config.imageSize * config.imageSize * 3;
  const images = Array.from({ length: batch }, (_, i) => new Uint8Array(n).map((_, k) => (k * 7 + i * 13) % 256));
  const train: ImageSet = { images: new MemoryPixelStore(images), labels: Int32Array.from(images, (_, i) => i % 10), paths: images.map((_, i) => `${i}`) };
  const times: number[] = [];
  let started = 0;
  const trainer = new Trainer(model, spec.blocks(options), { train }, spec.preprocessing, {
    batchSize: batch,
    augment: 'none',
    cacheBytes: 0,
    callbacks: [{ onEpochBegin: () => void (started = performance.now()), onEpochEnd: () => void times.push(performance.now() - started) }],
    ...(variant === 'separate-ops' ? { optimizer: fusedAdam } : {}),
  });
  try {
    trainer.unfreeze({ fromLayer: model.layers[1]!.name });
    const fit = () => trainer.fit(1 + steps, 1e-5, 1);
    if (variant === 'separate-ops') await withSeparateOpsRunTop(fit);
    else await fit();
    const timing = summarise(1, times[0]! / 1000, times.slice(1));
    return { measurement: 'train', model: modelLabel(config), variant, batch, imagesPerSecond: round((timing.steps * batch) / timing.seconds, 3), timing };
  } finally {
    trainer.dispose();
    model.dispose();
  }
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  const started = performance.now();
  const elapsed = () => (performance.now() - started) / 1000;
  mkdirSync(opts.out, { recursive: true });
  const file = path.join(opts.out, 'gpu-check.json');
  const report: Record<string, unknown> = {
    format: 'finetune-gpu-check/1',
    created: new Date().toISOString(),
    quick: opts.quick,
    budgetSeconds: opts.budgetSeconds,
    steps: {} as Record<string, unknown>,
    failures: [] as string[],
    skipped: [] as string[],
  };
  const steps = report.steps as Record<string, unknown>;
  const failures = report.failures as string[];
  const write = () => {
    report.seconds = round(elapsed(), 1);
    writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
  };
  const step = async (name: string, body: () => Promise<unknown>): Promise<void> => {
    if (elapsed() > opts.budgetSeconds) {
      (report.skipped as string[]).push(`${name}: out of time (--budget ${opts.budgetSeconds} s)`);
      write();
      return;
    }
    log(`gpu-check: ${name}… (${round(elapsed(), 0)} s)`);
    const t = performance.now();
    try {
      steps[name] = await body();
    } catch (e) {
      const message = e instanceof Error ? e.message.split('\n')[0]! : String(e);
      failures.push(`${name}: ${message}`);
      log(`gpu-check: ${name} failed: ${message}`);
    }
    (report.stepSeconds as Record<string, number> | undefined) ?? (report.stepSeconds = {});
    (report.stepSeconds as Record<string, number>)[name] = round((performance.now() - t) / 1000, 1);
    write();
  };

  await prepareBundledWebgpu();
  const quick = opts.quick;
  const size = quick ? 32 : 224;
  const batch = quick ? 4 : 32;

  await step('doctor', async () => {
    const r = await doctor({ speed: true, backends: ['webgpu'], seconds: quick ? 1 : 5, ...(quick ? { imageSize: 64, batchSize: 4 } : {}) });
    console.log(formatDoctor(r));
    return r;
  });
  await step('engine', async () => {
    const info = await initEngine('webgpu');
    if (info.kernels.failed.length > 0) failures.push(`kernel start-up checks: ${info.kernels.failed.map((f) => f.kernel).join(', ')}`);
    return info;
  });
  if (tf.getBackend() !== 'webgpu') {
    failures.push('webgpu did not start: nothing else can be measured');
    write();
    return 1;
  }
  await step('kernels', async () => {
    const checks = await checkTrainingOps();
    for (const c of checks) if (!c.ok) failures.push(`kernel check ${c.name}: max relative error ${c.maxRelativeError}`);
    return checks;
  });
  await step('counts', async () => {
    const results: CountsResult[] = [];
    for (const stage of ['full', 'stage2'] as const) {
      for (const variant of ['shipped', 'separate-ops'] as const) {
        const r = await measureCounts({ alpha: 1, imageSize: size, batch: quick ? 4 : 32, stage, variant }, log);
        log(`  ${stage} ${variant}: ${r.dispatchesPerStep} dispatches, ${r.readsPerStep} reads, ${r.allocationsPerStep} allocations per step`);
        results.push(r);
      }
    }
    return results;
  });
  await step('speed', async () => {
    const rows: SpeedRow[] = [];
    const budget = { warmupSteps: 1, minSeconds: quick ? 0 : 3, maxSteps: quick ? 1 : 3 };
    const configs: ModelConfig[] = quick
      ? [{ backbone: 'mobilenetv2', alpha: 0.35, imageSize: size }]
      : [{ backbone: 'mobilenetv2', alpha: 1, imageSize: 224 }, { backbone: 'mobilenetv2', alpha: 0.35, imageSize: 224 }, { backbone: 'vgg16', imageSize: 224 }];
    for (const config of configs) {
      for (const kind of ['forward', 'train'] as const) {
        try {
          const m = await measureOnce(config, kind, batch, budget);
          rows.push({ measurement: kind, model: modelLabel(config), variant: 'shipped', batch, ...m });
        } catch (e) {
          rows.push({ measurement: kind, model: modelLabel(config), variant: 'shipped', batch, error: e instanceof Error ? e.message.split('\n')[0]! : String(e) });
        }
        log(`  ${kind} ${modelLabel(config)}: ${rows.at(-1)!.imagesPerSecond ?? rows.at(-1)!.error} img/s`);
        steps.speed = rows;
        write();
      }
    }
    const mobilenet: ModelConfig = { backbone: 'mobilenetv2', alpha: quick ? 0.35 : 1, imageSize: size };
    for (const variant of ['shipped', 'separate-ops'] as const) {
      rows.push(await trainingSpeed(mobilenet, batch, quick ? 1 : 3, variant));
      log(`  train ${modelLabel(mobilenet)} through the Trainer, ${variant}: ${rows.at(-1)!.imagesPerSecond} img/s`);
    }
    return rows;
  });
  await step('staged', async (): Promise<StagedResult> => {
    const repoRoot = process.cwd();
    return benchStaged(
      {
        data: quick || !existsSync(opts.data) ? 'shapes' : opts.data,
        sharedDir: path.resolve(repoRoot, '../shared'),
        repoRoot,
        alpha: 0.35,
        imageSize: quick ? 64 : 160,
        batchSize: quick ? 16 : 32,
        headEpochs: quick ? 2 : 10,
        fineTuneEpochs: quick ? 1 : 5,
        unfreeze: 2,
        lr: 1e-3,
        fineTuneLr: 1e-4,
        seed: 42,
        weights: existsSync(opts.weights) ? opts.weights : 'none',
        warmup: true,
      },
      log,
    );
  });
  write();
  log(`gpu-check: wrote ${file} (${round(elapsed(), 1)} s${failures.length ? `; ${failures.length} failure(s): ${failures.join('; ')}` : ''})`);
  return failures.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code), // Dawn keeps the event loop alive
  (e: unknown) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : e);
    process.exit(1);
  },
);
