/**
 * `finetune predict` end to end on each inference engine (`--engine tfjs` against `--engine onnx`):
 * the whole CLI process on the same folder of images, as a user runs it, rounds alternating engines
 * (the machine is shared: read the spread and the CPU seconds).
 *
 *   npm run bench -- --only predict-engines [--predict-runs <run>,<run>] [--predict-images <dir>,<dir>] [--predict-rounds 3]
 *
 * Per run: images/s of the labelling itself (predict's own summary line: decoding and the model,
 * start-up not counted) and of the whole process (wall, start-up and model loading included), and
 * the process's CPU seconds (user + system, from GNU time). Default models: MobileNetV2 α=0.35 and
 * α=1.0 at 224 px with the ../shared ImageNet weights and a seeded 2-class head (a trained head
 * costs the same); default images: hymenoptera val/ (153) and 100 per class of flowers (500).
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import { initEngine } from '../src/engine/backend.js';
import { writeExportRun } from '../test/helpers/export-run.js';
import { repoRoot } from './jobs.js';
import { linkFlowersSubset } from './staged.js';

export interface PredictEnginesOptions {
  sharedDir: string;
  tmpDir: string;
  /** Run folders to label with; default: built from ../shared weights (see the header). */
  runs?: string[];
  /** Image folders; default: hymenoptera val/ and flowers (100 per class). */
  images?: string[];
  rounds: number;
}

export interface PredictEngineRun {
  model: string;
  images: string;
  files: number;
  engine: 'tfjs' | 'onnx';
  /** Predict's own figure: labelled files / seconds from the first file to the last. */
  labellingImagesPerSecond: number[];
  /** Files / the whole process's wall seconds. */
  processImagesPerSecond: number[];
  wallSeconds: number[];
  cpuSeconds: number[];
  /** The process's peak resident memory (MiB). */
  peakMiB: number[];
  /** What predict said it ran on. */
  engineLine: string;
  loadAverage: number[];
}

interface Timed {
  wall: number;
  cpu: number;
  peakMiB: number;
  stderr: string;
  status: number | null;
}

/** Runs the CLI under GNU time; its last stderr line is "<wall> <user> <sys> <peak KiB>". */
function timedCli(args: string[]): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', '%e %U %S %M', process.execPath, path.join(repoRoot, 'bin/finetune.js'), ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('close', (status) => {
      const [wall, user, sys, kib] = stderr.trim().split('\n').pop()!.split(' ').map(Number);
      resolve({ wall: wall!, cpu: user! + sys!, peakMiB: Math.round(kib! / 1024), stderr, status });
    });
  });
}

/** The default image folders: hymenoptera val/, and a folder linking 100 images of each flowers class. */
function defaultImages(sharedDir: string, tmpDir: string): string[] {
  const hymenoptera = path.join(sharedDir, 'datasets/hymenoptera_data/val');
  const subset = path.join(tmpDir, 'flowers-500');
  linkFlowersSubset(sharedDir, 100, subset);
  return [hymenoptera, subset];
}

/** Run folders for α=0.35 and α=1.0 (224 px, the ../shared ImageNet weights, a seeded head). */
async function defaultRuns(sharedDir: string, tmpDir: string): Promise<string[]> {
  await initEngine('wasm');
  const weights = {
    '0.35': path.join(sharedDir, 'weights/teachable-machine-mobilenet_v2_0.35_224'),
    '1': path.join(sharedDir, 'weights/mobilenet_v2_1.0_224_from_int8/mobilenet_v2_1.0_224_no_top.from-int8.h5'),
  };
  const runs: string[] = [];
  for (const [alpha, file] of Object.entries(weights)) {
    runs.push(
      await writeExportRun(path.join(tmpDir, `mobilenetv2-${alpha}`), {
        backbone: 'mobilenetv2',
        alpha: Number(alpha),
        imageSize: 224,
        classes: ['ants', 'bees'],
        weights: file,
      }),
    );
  }
  return runs;
}

const countFiles = (dir: string): number =>
  readdirSync(dir, { recursive: true, withFileTypes: true }).filter((d) => !d.isDirectory() && /\.(jpe?g|png)$/i.test(d.name)).length;

export async function benchPredictEngines(options: PredictEnginesOptions, log: (line: string) => void): Promise<PredictEngineRun[]> {
  if (!existsSync(path.join(options.sharedDir, 'datasets/hymenoptera_data')) && (!options.runs || !options.images)) {
    throw new Error(`predict-engines needs ${options.sharedDir} (weights and images), or both --predict-runs and --predict-images`);
  }
  const runs = options.runs ?? (await defaultRuns(options.sharedDir, options.tmpDir));
  const images = options.images ?? defaultImages(options.sharedDir, options.tmpDir);
  const results: PredictEngineRun[] = [];
  for (const run of runs) {
    for (const dir of images) {
      const files = countFiles(dir);
      const rows = (['tfjs', 'onnx'] as const).map(
        (engine): PredictEngineRun => ({
          model: path.basename(run),
          images: path.basename(dir) === 'val' ? 'hymenoptera val' : path.basename(dir),
          files,
          engine,
          labellingImagesPerSecond: [],
          processImagesPerSecond: [],
          wallSeconds: [],
          cpuSeconds: [],
          peakMiB: [],
          engineLine: '',
          loadAverage: [],
        }),
      );
      for (let round = 0; round < options.rounds; round++) {
        for (const row of rows) {
          const load = os.loadavg()[0]!;
          const t = await timedCli(['predict', run, dir, '--engine', row.engine]);
          if (t.status !== 0) throw new Error(`finetune predict --engine ${row.engine} ${run} ${dir} failed (${t.status}):\n${t.stderr}`);
          const rate = /labelled (\d+) files? in [\d.]+ s, ([\d.]+) images\/s/.exec(t.stderr);
          row.labellingImagesPerSecond.push(Number(rate?.[2] ?? NaN));
          row.processImagesPerSecond.push(files / t.wall);
          row.wallSeconds.push(t.wall);
          row.cpuSeconds.push(t.cpu);
          row.peakMiB.push(t.peakMiB);
          row.loadAverage.push(Math.round(load * 10) / 10);
          row.engineLine = /engine: (.*)/.exec(t.stderr)?.[1] ?? '';
          log(`predict-engines: ${row.model} on ${row.images} (${files}), ${row.engine}: ${rate?.[2]} images/s labelling, ${t.wall} s wall, ${t.cpu.toFixed(1)} CPU s, ${t.peakMiB} MiB peak, load ${load.toFixed(1)}`);
        }
      }
      results.push(...rows);
    }
  }
  return results;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** A table: per model and image folder, each engine's medians, and ONNX Runtime's speed-up. */
export function formatPredictEngines(rows: PredictEngineRun[]): string {
  const lines = ['model                images            files  engine  labelling img/s (median; all)   process img/s  wall s  CPU s  peak MiB  load'];
  for (let i = 0; i < rows.length; i += 2) {
    const pair = [rows[i]!, rows[i + 1]!];
    for (const r of pair) {
      lines.push(
        [
          r.model.padEnd(20),
          r.images.padEnd(17),
          String(r.files).padStart(5),
          r.engine.padEnd(6),
          `${median(r.labellingImagesPerSecond).toFixed(1)} (${r.labellingImagesPerSecond.map((x) => x.toFixed(1)).join(', ')})`.padEnd(31),
          median(r.processImagesPerSecond).toFixed(1).padStart(13),
          median(r.wallSeconds).toFixed(1).padStart(6),
          median(r.cpuSeconds).toFixed(1).padStart(5),
          String(median(r.peakMiB)).padStart(8),
          `${Math.min(...r.loadAverage)}–${Math.max(...r.loadAverage)}`,
        ].join('  '),
      );
    }
    const [tfjs, onnx] = pair;
    lines.push(
      `  onnx / tfjs: labelling ${(median(onnx!.labellingImagesPerSecond) / median(tfjs!.labellingImagesPerSecond)).toFixed(2)}×, ` +
        `process ${(median(onnx!.processImagesPerSecond) / median(tfjs!.processImagesPerSecond)).toFixed(2)}×, ` +
        `CPU seconds ${(median(onnx!.cpuSeconds) / median(tfjs!.cpuSeconds)).toFixed(2)}×`,
    );
  }
  const engines = [...new Set(rows.map((r) => `${r.engine}: ${r.engineLine.replace(/ \[.*\]$/, '')}`))];
  return [...lines, ...engines.map((e) => `  ${e}`)].join('\n');
}
