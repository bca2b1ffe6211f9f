/**
 * `npm run bench -- --only keras`: the Keras transfer-learning guide's recipe (bench/keras-recipe.py, TensorFlow)
 * side by side with `finetune` at its defaults (the head solved, then 5 epochs), the solved head alone, with
 * --augment-copies 4, and with Adam's head epochs on 4 copies (up to 30), on the same data and weights (see
 * FINETUNE_FLAGS; the Keras recipe: 10 + 5 epochs). Each run is
 * a process of its own, timed by /usr/bin/time (wall, user + system CPU of the process and its threads); the runs
 * alternate (order reversed every other round) so a load change on a shared machine hits every recipe alike.
 * finetune runs with --no-cache: neither side reuses anything from an earlier run.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import { repoRoot } from './jobs.js';

export const KERAS_RECIPES = ['keras', 'finetune', 'finetune-probe', 'finetune-copies4', 'finetune-copies4-e30'] as const;
export type KerasRecipe = (typeof KERAS_RECIPES)[number];

/** finetune's flags for each of its recipes here (beside the data, weights, --no-cache and the output folder). */
const FINETUNE_FLAGS: Record<Exclude<KerasRecipe, 'keras'>, string[]> = {
  finetune: [],
  // The solved head alone (stage 1 of the defaults, no fine-tuning).
  'finetune-probe': ['--fine-tune-epochs', '0'],
  'finetune-copies4': ['--augment-copies', '4'],
  // The fast setting before the solved head: Adam's head epochs cost little on cached copies; early stopping (patience 5) ends them.
  'finetune-copies4-e30': ['--stage1', 'adam', '--augment-copies', '4', '--epochs', '30'],
};

export interface KerasBenchOptions {
  dataRoot: string;
  alphas: number[];
  rounds: number;
  /** Weights per alpha: the same file for both sides (Keras reads it by layer name too). */
  weightsFor: (alpha: number) => string;
  python: string;
  /** Stage 1 learning rate of the Keras recipe (the guide's 1e-4 when undefined). */
  kerasLr?: number;
  timeLimitSeconds: number;
  log: (line: string) => void;
}

export interface KerasRun {
  recipe: KerasRecipe;
  alpha: number;
  round: number;
  valAccuracy: number;
  valLoss: number;
  /** The Keras recipe's validation accuracy after each epoch. */
  valAccuracyPerEpoch?: number[];
  /** Wall seconds of the whole process (start-up, imports, decoding, both stages). */
  seconds: number;
  /** User + system CPU seconds of the process, every thread. */
  cpuSeconds: number;
  loadAverage: [number, number];
  command: string;
}

/** The Python that runs the Keras recipe: $FINETUNE_BENCH_PYTHON, /tmp/tfenv/bin/python, then python3 — the first that imports TensorFlow. */
export function findTensorflowPython(): { python?: string; reason?: string } {
  const candidates = [process.env.FINETUNE_BENCH_PYTHON, '/tmp/tfenv/bin/python', 'python3'].filter((c): c is string => !!c);
  for (const python of candidates) {
    const probe = spawnSync(python, ['-c', 'import tensorflow, keras; print(tensorflow.__version__, keras.__version__)'], {
      encoding: 'utf8',
      env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '3' },
      timeout: 120_000,
    });
    if (probe.status === 0) return { python };
  }
  return { reason: `no Python with TensorFlow and Keras (tried ${candidates.join(', ')}): pip install tensorflow-cpu, then set FINETUNE_BENCH_PYTHON` };
}

function commandFor(recipe: KerasRecipe, alpha: number, dataRoot: string, weights: string, python: string, out: string, kerasLr?: number): string[] {
  if (recipe === 'keras') {
    return [python, path.join(repoRoot, 'bench/keras-recipe.py'), dataRoot, '--alpha', String(alpha), '--weights', weights, ...(kerasLr ? ['--lr', String(kerasLr)] : [])];
  }
  const finetune = [process.execPath, path.join(repoRoot, 'bin/finetune.js'), dataRoot, '--alpha', String(alpha), '--weights', weights, '--no-cache', '--quiet', '--overwrite', '-o', out];
  return [...finetune, ...FINETUNE_FLAGS[recipe]];
}

const round2 = (n: number) => Math.round(n * 100) / 100;

async function runTimed(argv: string[], timeLimitSeconds: number): Promise<{ stdout: string; stderr: string; wall: number; cpu: number; status: number | null }> {
  const timeFile = path.join(mkdtempSync(path.join(os.tmpdir(), 'finetune-bench-keras-time-')), 'time');
  try {
    const child = spawn('/usr/bin/time', ['-f', '%e %U %S', '-o', timeFile, ...argv], { env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeLimitSeconds * 1000);
    const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearTimeout(timer);
    const [wall, user, system] = readFileSync(timeFile, 'utf8').trim().split('\n').pop()!.split(' ').map(Number);
    return { stdout, stderr, wall: wall!, cpu: user! + system!, status };
  } finally {
    rmSync(path.dirname(timeFile), { recursive: true, force: true });
  }
}

async function runOne(recipe: KerasRecipe, alpha: number, round: number, o: KerasBenchOptions): Promise<KerasRun> {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'finetune-bench-keras-'));
  const out = path.join(tmp, 'run');
  const argv = commandFor(recipe, alpha, o.dataRoot, o.weightsFor(alpha), o.python, out, o.kerasLr);
  const loadBefore = os.loadavg()[0]!;
  try {
    const r = await runTimed(argv, o.timeLimitSeconds);
    if (r.status !== 0) throw new Error(`${recipe} α=${alpha} failed (status ${r.status}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    let valAccuracy: number;
    let valLoss: number;
    let perEpoch: number[] | undefined;
    if (recipe === 'keras') {
      const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
      if (!line) throw new Error(`keras α=${alpha} printed no JSON result: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
      const result = JSON.parse(line) as { valAccuracy: number; valLoss: number; valAccuracyPerEpoch: number[] };
      ({ valAccuracy, valLoss } = result);
      perEpoch = result.valAccuracyPerEpoch;
    } else {
      const results = (JSON.parse(readFileSync(path.join(out, 'finetune.json'), 'utf8')) as { results: { valAccuracy: number; valLoss: number } }).results;
      valAccuracy = Math.round(results.valAccuracy * 1e4) / 1e4;
      valLoss = Math.round(results.valLoss * 1e4) / 1e4;
    }
    return {
      recipe, alpha, round, valAccuracy, valLoss,
      ...(perEpoch ? { valAccuracyPerEpoch: perEpoch } : {}),
      seconds: round2(r.wall), cpuSeconds: round2(r.cpu),
      loadAverage: [round2(loadBefore), round2(os.loadavg()[0]!)],
      command: argv.map((a) => path.relative(repoRoot, a).startsWith('..') || !existsSync(a) ? a : path.relative(repoRoot, a)).join(' '),
    };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Every alpha in turn, `rounds` rounds each; within a round the recipes alternate, order reversed every other round. */
export async function benchKeras(o: KerasBenchOptions): Promise<KerasRun[]> {
  const runs: KerasRun[] = [];
  for (const alpha of o.alphas) {
    for (let round = 1; round <= o.rounds; round++) {
      const order = round % 2 === 1 ? [...KERAS_RECIPES] : [...KERAS_RECIPES].reverse();
      for (const recipe of order) {
        o.log(`keras: α=${alpha} round ${round}: ${recipe}…`);
        const run = await runOne(recipe, alpha, round, o);
        o.log(`keras: α=${alpha} round ${round}: ${recipe} val acc ${run.valAccuracy}, ${run.seconds} s wall, ${run.cpuSeconds} s CPU, load ${run.loadAverage.join('→')}`);
        runs.push(run);
      }
    }
  }
  return runs;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** One row per (alpha, recipe): mean val accuracy, wall and CPU seconds, and Keras's time over this recipe's. */
export function formatKerasBench(runs: KerasRun[]): string {
  const lines = ['| α | recipe | runs | val acc | wall s | CPU s | Keras ÷ this (wall) | Keras ÷ this (CPU) | load (1 min) |', '|---|---|---|---|---|---|---|---|---|'];
  for (const alpha of [...new Set(runs.map((r) => r.alpha))]) {
    const keras = runs.filter((r) => r.alpha === alpha && r.recipe === 'keras');
    for (const recipe of KERAS_RECIPES) {
      const rs = runs.filter((r) => r.alpha === alpha && r.recipe === recipe);
      if (rs.length === 0) continue;
      const wall = mean(rs.map((r) => r.seconds));
      const cpu = mean(rs.map((r) => r.cpuSeconds));
      const ratio = (k: number[], t: number) => (keras.length ? `${(mean(k) / t).toFixed(2)}×` : '—');
      const loads = rs.flatMap((r) => r.loadAverage);
      lines.push(
        `| ${alpha} | ${recipe} | ${rs.length} | ${rs.map((r) => r.valAccuracy.toFixed(3)).join(', ')} | ${wall.toFixed(1)} | ${cpu.toFixed(1)} | ${ratio(keras.map((r) => r.seconds), wall)} | ${ratio(keras.map((r) => r.cpuSeconds), cpu)} | ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)} |`,
      );
    }
  }
  return lines.join('\n');
}
