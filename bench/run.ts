/**
 * The benchmark suite: `npm run bench -- [flags]` (run `npm run bench -- --help` for them).
 *
 * Per backend: forward and training-step images/s of MobileNetV2 α=1.0 and VGG16 at 224 px, and a
 * staged fine-tune timed with the Learner's activation cache and without it; once: decoding
 * images/s (sharp, independent of the backend). Prints a table to stdout (progress goes to stderr)
 * and writes every figure, what exactly was measured and the machine to a JSON file.
 *
 * Each backend measurement runs in a process of its own (see bench/jobs.ts).
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { BACKEND_ORDER, probeBackends, type BackendName } from '../src/engine/backend.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { benchDecode } from './decode.js';
import { killActiveJob, repoRoot, runJob } from './jobs.js';
import type { StepBudget } from './measure.js';
import { modelLabel, stepDescription, type ModelConfig, type SpeedKind, type SpeedResult } from './model-speed.js';
import { formatTable, machineInfo, tableRows, versions, type BackendReport, type BenchReport } from './report.js';
import type { StagedOptions, StagedResult } from './staged.js';

const MEASUREMENTS = ['decode', 'forward', 'train', 'staged'] as const;
type Measurement = (typeof MEASUREMENTS)[number];

interface Flags {
  backends?: string[];
  only: string[];
  quick: boolean;
  out?: string;
  batch?: number;
  minSeconds?: number;
  maxSteps?: number;
  stagedData?: string;
  stagedSize?: number;
  stagedWeights: string;
  headEpochs: number;
  fineTuneEpochs: number;
}

const list = (value: string) => value.split(',').map((s) => s.trim()).filter(Boolean);
const wholeNumber = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('use a whole number ≥ 1');
  return n;
};
const wholeOrZero = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('use a whole number ≥ 0');
  return n;
};
const seconds = (value: string) => {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('use a number of seconds ≥ 0');
  return n;
};

function parseFlags(argv: string[]): Flags {
  const program = new Command('npm run bench --')
    .description('Decode, forward, training-step and staged fine-tune speed, per tfjs backend.')
    .option('--backends <list>', `comma-separated, from ${BACKEND_ORDER.join(', ')} (default: every available one but cpu)`, list)
    .option('--only <list>', `comma-separated, from ${MEASUREMENTS.join(', ')}`, list, [...MEASUREMENTS])
    .option('--quick', 'tiny sizes and few steps: a smoke test, not figures to compare', false)
    .option('--out <file>', 'JSON output (default bench/results/<host>-<backends>-<date>.json)')
    .option('--batch <n>', 'forward/training batch (default 32; quick 4); halved while it runs out of memory', wholeNumber)
    .option('--min-seconds <s>', 'time each forward/training measurement at least this long (default 10; quick 0)', seconds)
    .option('--max-steps <n>', '…or at most this many steps after the warm-up step (default 5; quick 1)', wholeNumber)
    .option('--staged-data <what>', 'hymenoptera (../shared; default), shapes (fixtures/shapes; quick default) or a data folder')
    .option('--staged-size <px>', 'staged fine-tune image size (default 160; quick 64)', wholeNumber)
    .option('--staged-weights <w>', "shared (../shared Teachable Machine MobileNetV2 0.35 when present), none, or a weights path", 'shared')
    .option('--head-epochs <n>', 'staged stage 1 epochs', wholeNumber, 10)
    .option('--fine-tune-epochs <n>', 'staged stage 2 epochs', wholeOrZero, 5)
    .addHelpText(
      'after',
      '\nThe pure-JavaScript cpu backend runs only when named in --backends, and then with a small workload (the --quick sizes, no VGG16 training step).',
    );
  program.parse(argv, { from: 'user' });
  const flags = program.opts<Flags>();
  for (const m of flags.only) {
    if (!(MEASUREMENTS as readonly string[]).includes(m)) program.error(`--only ${m}: use ${MEASUREMENTS.join(', ')}`);
  }
  for (const b of flags.backends ?? []) {
    if (!(BACKEND_ORDER as readonly string[]).includes(b)) program.error(`--backends ${b}: use ${BACKEND_ORDER.join(', ')}`);
  }
  return flags;
}

interface Workload {
  models: ModelConfig[];
  /** Backbones whose training step is not measured (with why). */
  skipTrain?: { backbone: string; why: string };
  batch: number;
  budget: StepBudget;
  staged: StagedOptions;
}

function workload(flags: Flags, quick: boolean, sharedDir: string): Workload {
  const models: ModelConfig[] = quick
    ? [
        { backbone: 'mobilenetv2', alpha: 0.35, imageSize: 32 },
        { backbone: 'vgg16', imageSize: 32 },
      ]
    : [
        { backbone: 'mobilenetv2', alpha: 1, imageSize: 224 },
        { backbone: 'vgg16', imageSize: 224 },
      ];
  return {
    models,
    batch: flags.batch ?? (quick ? 4 : 32),
    budget: {
      warmupSteps: 1,
      minSeconds: flags.minSeconds ?? (quick ? 0 : 10),
      maxSteps: flags.maxSteps ?? (quick ? 1 : 5),
    },
    staged: {
      data: flags.stagedData ?? (quick ? 'shapes' : 'hymenoptera'),
      sharedDir,
      repoRoot,
      alpha: 0.35,
      imageSize: flags.stagedSize ?? (quick ? 64 : 160),
      batchSize: quick ? 16 : 32,
      headEpochs: flags.headEpochs,
      fineTuneEpochs: flags.fineTuneEpochs,
      unfreeze: 2,
      lr: 1e-3,
      fineTuneLr: 1e-4,
      seed: 42,
      weights: flags.stagedWeights,
      warmup: true,
    },
  };
}

/**
 * The plain-JavaScript backend: the quick sizes, a 32 px staged fine-tune, and no VGG16 training
 * step (over 5 minutes per step of 4 images even at 32 px on a 2-core machine).
 */
function cpuWorkload(flags: Flags, sharedDir: string): Workload {
  const w = workload(flags, true, sharedDir);
  return {
    ...w,
    skipTrain: { backbone: 'vgg16', why: 'plain-JavaScript VGG16 training takes minutes per step even at 32 px' },
    staged: { ...w.staged, imageSize: flags.stagedSize ?? 32 },
  };
}

const log = (line: string) => console.error(line);

/** One forward or training measurement, halving the batch while it runs out of memory. */
async function speed(backend: BackendName, config: ModelConfig, kind: SpeedKind, w: Workload, report: BackendReport): Promise<SpeedResult> {
  const result: SpeedResult = {
    measurement: kind,
    model: modelLabel(config),
    backbone: config.backbone,
    ...(config.backbone === 'mobilenetv2' ? { alpha: config.alpha ?? 1 } : {}),
    imageSize: config.imageSize,
    batch: w.batch,
    requestedBatch: w.batch,
    weights: 'random',
    what: stepDescription(kind),
    notes: [],
  };
  for (let batch = w.batch; ; batch = Math.floor(batch / 2)) {
    result.batch = batch;
    const out = await runJob<{ timing: SpeedResult['timing']; imagesPerSecond: number }>({
      kind: 'speed',
      backend,
      config,
      measurement: kind,
      batch,
      budget: w.budget,
    });
    if (out.engine) {
      report.detail ??= out.engine.detail;
      report.probes ??= out.engine.probes;
    }
    if (out.result) {
      result.timing = out.result.timing;
      result.imagesPerSecond = out.result.imagesPerSecond;
      return result;
    }
    if (out.outOfMemory && batch > 1) {
      result.notes.push(`batch ${batch} ran out of memory (${out.error}); halved`);
      log(`  [${backend}] batch ${batch} ran out of memory: trying ${Math.floor(batch / 2)}`);
      continue;
    }
    result.error = out.error ?? 'no result';
    return result;
  }
}

function defaultOut(host: string, backends: string[], started: Date): string {
  const stamp = started.toISOString().slice(0, 19).replace(/:/g, '-');
  const safeHost = host.replace(/[^A-Za-z0-9._-]/g, '_');
  return path.join(repoRoot, 'bench/results', `${safeHost}-${backends.join('+') || 'none'}-${stamp}.json`);
}

export async function main(argv: string[]): Promise<number> {
  const started = new Date();
  const flags = parseFlags(argv);
  const only = new Set(flags.only as Measurement[]);
  const sharedDir = path.resolve(repoRoot, '../shared');

  const probes = await probeBackends();
  const backends: BackendName[] = flags.backends
    ? (flags.backends as BackendName[])
    : probes.filter((p) => p.available && p.name !== 'cpu').map((p) => p.name);
  log(`backends: ${backends.join(', ')}  (${probes.map((p) => `${p.name}: ${p.available ? 'yes' : 'no'} — ${p.detail}`).join('; ')})`);

  const standard = workload(flags, flags.quick, sharedDir);
  const report: BenchReport = {
    format: 'finetune-bench/1',
    created: started.toISOString(),
    argv,
    quick: flags.quick,
    machine: machineInfo(),
    versions: versions(),
    probes,
    settings: {
      only: [...only],
      models: standard.models.map(modelLabel),
      batch: standard.batch,
      budget: standard.budget,
      staged: { ...standard.staged, sharedDir: undefined, repoRoot: undefined },
    },
    backends: [],
    seconds: 0,
  };

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'finetune-bench-'));
  try {
    if (only.has('decode')) {
      report.decode = await benchDecode(
        {
          sharedDir,
          size: flags.quick ? 64 : 224,
          ...(flags.quick ? { maxFiles: 48 } : {}),
          minSeconds: flags.quick ? 0 : 5,
          maxPasses: flags.quick ? 1 : 3,
          tmpDir: tmp,
        },
        log,
      );
    }

    for (const backend of backends) {
      const b: BackendReport = { name: backend, notes: [], forward: [], train: [] };
      report.backends.push(b);
      const w = backend === 'cpu' ? cpuWorkload(flags, sharedDir) : standard;
      if (backend === 'cpu') {
        b.notes.push(
          'cpu (plain JavaScript) is far too slow for the full workload: measured with the --quick sizes, ' +
            `the staged fine-tune at ${w.staged.imageSize} px, and no VGG16 training step`,
        );
      }
      for (const config of w.models) {
        for (const kind of ['forward', 'train'] as const) {
          if (!only.has(kind)) continue;
          if (kind === 'train' && w.skipTrain?.backbone === config.backbone) {
            log(`  [${backend}] skipping the ${modelLabel(config)} training step: ${w.skipTrain.why}`);
            continue;
          }
          b[kind].push(await speed(backend, config, kind, w, b));
        }
      }
      if (only.has('staged')) {
        const out = await runJob<StagedResult>({ kind: 'staged', backend, options: w.staged });
        if (out.engine) {
          b.detail ??= out.engine.detail;
          b.probes ??= out.engine.probes;
        }
        if (out.result) b.staged = out.result;
        else b.stagedError = out.error ?? 'no result';
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  report.seconds = Math.round((Date.now() - started.getTime()) / 100) / 10;
  const out = path.resolve(flags.out ?? defaultOut(report.machine.hostname, backends, started));
  mkdirSync(path.dirname(out), { recursive: true });
  await writeFileAtomic(out, JSON.stringify(report, null, 2) + '\n');

  const m = report.machine;
  console.log(
    `\n${m.cpuModel} × ${m.cpuCount}, ${(m.totalMemoryBytes / 1024 ** 3).toFixed(0)} GiB, Node ${m.node}, tfjs ${report.versions.tfjs}` +
      (report.quick ? '  (--quick: smoke-test sizes)' : ''),
  );
  for (const b of report.backends) console.log(`${b.name}: ${b.detail ?? 'not started'}${b.notes.length ? ` — ${b.notes.join('; ')}` : ''}`);
  console.log(`\n${formatTable(tableRows(report))}\n`);
  console.log(`written: ${path.relative(process.cwd(), out) || out} (${report.seconds} s in all)`);

  const failed =
    report.backends.some((b) => b.stagedError || [...b.forward, ...b.train].some((r) => r.error)) || (report.backends.length === 0 && !report.decode);
  return failed ? 1 : 0;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killActiveJob();
    process.exit(130);
  });
}
process.exitCode = await main(process.argv.slice(2));
