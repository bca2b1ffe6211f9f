/** The benchmark's JSON document, the machine it describes, and the console table. */
import type { CacheBenchResult } from './cache.js';
import type { KerasRun } from './keras.js';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import type { BackendName, BackendProbe } from '../src/engine/backend.js';
import type { AccuracyConfig } from './accuracy.js';
import type { DecodeResult } from './decode.js';
import { repoRoot } from './jobs.js';
import type { SpeedResult } from './model-speed.js';
import type { PredictEngineRun } from './predict-engines.js';
import type { StagedResult } from './staged.js';

export interface MachineInfo {
  hostname: string;
  platform: string;
  release: string;
  arch: string;
  cpuModel: string;
  cpuCount: number;
  availableParallelism: number;
  totalMemoryBytes: number;
  node: string;
  /** 1, 5 and 15-minute load averages when the benchmark started: above the core count, others competed for the CPU. */
  loadAverage: number[];
}

export interface BackendReport {
  name: BackendName;
  /** From initEngine in the measuring processes, e.g. "wasm, SIMD, 1 thread". */
  detail?: string;
  probes?: BackendProbe[];
  notes: string[];
  forward: SpeedResult[];
  train: SpeedResult[];
  staged?: StagedResult;
  stagedError?: string;
  /** `--only accuracy`: one entry per alpha × recipe. */
  accuracy?: AccuracyConfig[];
  /** `--only cache`: the same run cold and warm (bench/cache.ts), per alpha. */
  cache?: CacheBenchResult[];
  cacheError?: string;
}

export interface BenchReport {
  format: 'finetune-bench/1';
  created: string;
  /** The flags given. */
  argv: string[];
  quick: boolean;
  machine: MachineInfo;
  versions: Record<string, string | undefined>;
  /** Every backend probed, available or not, and why. */
  probes: BackendProbe[];
  settings: Record<string, unknown>;
  decode?: DecodeResult;
  /** `--only predict-engines`: finetune predict's processes per engine (bench/predict-engines.ts). */
  predictEngines?: PredictEngineRun[];
  /** --only keras: the Keras guide's recipe beside finetune; `skipped` says why it did not run. */
  keras?: { python?: string; runs?: KerasRun[]; skipped?: string; error?: string };
  backends: BackendReport[];
  seconds: number;
}

const require = createRequire(import.meta.url);

function versionOf(pkg: string): string | undefined {
  try {
    return (require(`${pkg}/package.json`) as { version: string }).version;
  } catch {
    return undefined;
  }
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    platform: os.platform(),
    release: os.release(),
    arch: os.arch(),
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cpuCount: cpus.length,
    availableParallelism: typeof os.availableParallelism === 'function' ? os.availableParallelism() : cpus.length,
    totalMemoryBytes: os.totalmem(),
    node: process.versions.node,
    loadAverage: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export function versions(): Record<string, string | undefined> {
  let commit: string | undefined;
  try {
    commit = execFileSync('git', ['describe', '--always', '--dirty'], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    commit = undefined;
  }
  return {
    finetune: (require('../package.json') as { version: string }).version,
    commit,
    tfjs: tf.version.tfjs,
    'tfjs-backend-wasm': versionOf('@tensorflow/tfjs-backend-wasm'),
    'tfjs-backend-webgpu': versionOf('@tensorflow/tfjs-backend-webgpu'),
    'tfjs-node': versionOf('@tensorflow/tfjs-node'),
    'tfjs-node-gpu': versionOf('@tensorflow/tfjs-node-gpu'),
    sharp: versionOf('sharp'),
  };
}

/** One line of the console table. */
export interface Row {
  backend: string;
  measurement: string;
  figure: string;
  details: string;
}

const fmt = (x: number, digits = x >= 100 ? 0 : x >= 10 ? 1 : 2) => x.toFixed(digits);

function speedRow(backend: string, r: SpeedResult): Row {
  const measurement = `${r.model} ${r.measurement === 'forward' ? 'forward' : 'training step'}`;
  const retried = r.batch !== r.requestedBatch ? ` (${r.requestedBatch}${r.requestedBatch / 2 > r.batch ? `…${r.batch * 2}` : ''}: out of memory)` : '';
  // The first note says why this size or batch was chosen (e.g. VGG16 training below 224 px).
  const why = r.batch === r.requestedBatch && r.notes[0] ? `; ${r.notes[0]}` : '';
  if (r.imagesPerSecond === undefined || !r.timing) {
    return { backend, measurement, figure: 'failed', details: `batch ${r.batch}${retried}: ${r.error ?? 'no result'}` };
  }
  const t = r.timing;
  return {
    backend,
    measurement,
    figure: `${fmt(r.imagesPerSecond)} img/s`,
    details: `batch ${r.batch}${retried}; ${t.steps} step${t.steps === 1 ? '' : 's'} in ${fmt(t.seconds)} s, median ${fmt(t.msPerStep.median / 1000)} s/step; random weights${why}`,
  };
}

const seconds = (s: number) => (s >= 100 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${s.toFixed(1)} s`);

function accuracyRows(backend: string, c: AccuracyConfig): Row[] {
  const name = `accuracy: ${c.model}, ${c.recipe.label}`;
  const rows: Row[] = c.runs.map((r) => ({
    backend,
    measurement: `${name}, seed ${r.seed}`,
    figure: `${r.valAccuracy.toFixed(3)} (${r.correct}/${r.valImages})`,
    details:
      `val loss ${r.valLoss.toFixed(3)}${r.rocAuc !== undefined ? `, ROC AUC ${r.rocAuc.toFixed(3)}` : ''}, ${seconds(r.seconds)} (CPU ${r.cpuSeconds.toFixed(0)} s, load ${r.loadAverage[0].toFixed(1)}), ` +
      `epochs ${r.epochsRun.join('+')}${r.bestEpoch ? `, best: stage ${r.bestEpoch.stage} epoch ${r.bestEpoch.epoch}` : ''}`,
  }));
  for (const f of c.failures) rows.push({ backend, measurement: `${name}, seed ${f.seed}`, figure: 'failed', details: f.error });
  const acc = c.valAccuracy;
  if (acc && c.valLoss && c.seconds) {
    const n = c.runs.length;
    rows.push({
      backend,
      measurement: `${name}, ${n} seed${n === 1 ? '' : 's'}: mean ± sd`,
      figure: `${acc.mean.toFixed(3)} ± ${acc.sd.toFixed(3)}`,
      details:
        `min ${acc.min.toFixed(3)}, max ${acc.max.toFixed(3)}; val loss ${c.valLoss.mean.toFixed(3)} ± ${c.valLoss.sd.toFixed(3)}; ` +
        `${seconds(c.seconds.mean)} ± ${c.seconds.sd.toFixed(1)} s a run; ${c.dataset.name}, weights ${c.weights === 'none' || c.weights === 'imagenet' ? c.weights : 'pretrained (../shared)'}`,
    });
  }
  return rows;
}

export function tableRows(report: BenchReport): Row[] {
  const rows: Row[] = [];
  const d = report.decode;
  if (d) {
    rows.push({
      backend: '(sharp)',
      measurement: `decode to ${d.size} px`,
      figure: `${fmt(d.imagesPerSecond)} img/s`,
      details: `${d.files} ${d.source === 'hymenoptera' ? 'hymenoptera JPEGs' : 'generated JPEGs'} × ${d.passes}, ${d.concurrency} at a time${d.failed ? `, ${d.failed} failed` : ''}`,
    });
  }
  for (const b of report.backends) {
    for (const r of [...b.forward, ...b.train]) rows.push(speedRow(b.name, r));
    const s = b.staged;
    if (s) {
      const setup = `${s.model}, ${s.dataset.name} ${s.dataset.train}+${s.dataset.valid}, ${s.epochs.head}+${s.epochs.fineTune} epochs, batch ${s.batchSize}`;
      rows.push({ backend: b.name, measurement: 'staged fine-tune, with cache', figure: `${fmt(s.cached.seconds)} s`, details: setup });
      rows.push({ backend: b.name, measurement: 'staged fine-tune, without cache', figure: `${fmt(s.uncached.seconds)} s`, details: 'cacheBytes 0' });
      rows.push({ backend: b.name, measurement: 'staged: cache speed-up', figure: `${fmt(s.ratio)}×`, details: 'time without / time with' });
      rows.push({
        backend: b.name,
        measurement: 'staged: val accuracy (cache / none)',
        figure: `${s.cached.valAccuracy.toFixed(3)} / ${s.uncached.valAccuracy.toFixed(3)}`,
        details: `max weight difference ${s.maxWeightDiff.toExponential(1)}; weights ${s.weights === 'random' ? 'random' : 'pretrained'}`,
      });
    } else if (b.stagedError) {
      rows.push({ backend: b.name, measurement: 'staged fine-tune', figure: 'failed', details: b.stagedError });
    }
    for (const c of b.accuracy ?? []) rows.push(...accuracyRows(b.name, c));
  }
  return rows;
}

/** A plain-text table (also valid Markdown). */
export function formatTable(rows: Row[]): string {
  const header: Row = { backend: 'backend', measurement: 'measurement', figure: 'figure', details: 'what was measured' };
  const keys = ['backend', 'measurement', 'figure', 'details'] as const;
  const width = (k: (typeof keys)[number]) => Math.max(...[header, ...rows].map((r) => r[k].length));
  const line = (r: Row) => `| ${keys.map((k) => (k === 'figure' ? r[k].padStart(width(k)) : r[k].padEnd(width(k)))).join(' | ')} |`;
  const rule = `|${keys.map((k) => (k === 'figure' ? `${'-'.repeat(width(k) + 1)}:` : '-'.repeat(width(k) + 2))).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}
