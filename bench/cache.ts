/**
 * `--only cache`: the persistent cache between runs. The same `finetune` command twice, each in a
 * process of its own through dist/ (as a user runs it): cold, with an empty temporary cache folder
 * (FINETUNE_CACHE_DIR), then warm, into another --out. Reports both wall and CPU times, the
 * speed-up, what the warm run's log says came from the cache, and whether the two saved models'
 * weights are byte-identical.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import { repoRoot } from './jobs.js';

export interface CacheBenchOptions {
  backend: string;
  /** The data folder and weights (hymenoptera and the shared α=0.35 weights, or fixtures/shapes for --quick). */
  data: string;
  weights: string;
  alpha: number;
  imageSize?: number;
  augmentCopies: number;
  epochs?: number;
  fineTuneEpochs?: number;
  timeLimitSeconds: number;
}

export interface CacheRun {
  wallSeconds: number;
  cpuSeconds: number;
  loadAverage: number[];
  /** The run log's lines about the cache. */
  cacheLines: string[];
}

export interface CacheBenchResult {
  command: string;
  cold: CacheRun;
  warm: CacheRun;
  wallSpeedup: number;
  cpuSpeedup: number;
  /** The two runs' model/ weight files are byte for byte the same. */
  identicalWeights: boolean;
  valAccuracy: { cold?: number; warm?: number };
  cacheBytes: number;
}

/** Refuses to time a stale build: the child runs dist/, so dist/ must be newer than every file in src/. */
export function distProblem(): string | undefined {
  const dist = path.join(repoRoot, 'dist/cli/main.js');
  if (!existsSync(dist)) return 'dist/ is missing: run npm run build first (the cache measurement runs the CLI as a user does)';
  const newest = (dir: string): number =>
    Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(path.join(dir, e.name)) : statSync(path.join(dir, e.name)).mtimeMs)));
  if (newest(path.join(repoRoot, 'src')) > statSync(dist).mtimeMs) return 'dist/ is older than src/: run npm run build first';
  return undefined;
}

export async function benchCache(options: CacheBenchOptions, log: (line: string) => void): Promise<CacheBenchResult> {
  const problem = distProblem();
  if (problem) throw new Error(problem);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'finetune-bench-cache-'));
  const args = (out: string) => [
    options.data,
    '--alpha', String(options.alpha),
    '--weights', options.weights,
    '--augment-copies', String(options.augmentCopies),
    '--backend', options.backend,
    ...(options.imageSize ? ['--image-size', String(options.imageSize)] : []),
    ...(options.epochs ? ['--epochs', String(options.epochs)] : []),
    ...(options.fineTuneEpochs !== undefined ? ['--fine-tune-epochs', String(options.fineTuneEpochs)] : []),
    '--out', out,
  ];
  const env = { ...process.env, FINETUNE_CACHE_DIR: path.join(tmp, 'cache') };
  try {
    log(`cache: cold run (empty cache in ${env.FINETUNE_CACHE_DIR})…`);
    const cold = await timedRun(args(path.join(tmp, 'cold')), env, tmp, options.timeLimitSeconds);
    log(`cache:   ${cold.wallSeconds} s wall, ${cold.cpuSeconds} CPU s; warm run…`);
    const warm = await timedRun(args(path.join(tmp, 'warm')), env, tmp, options.timeLimitSeconds);
    log(`cache:   ${warm.wallSeconds} s wall, ${warm.cpuSeconds} CPU s`);
    const weights = (run: string) => {
      const model = path.join(tmp, run, 'model');
      return readdirSync(model).filter((f) => f.endsWith('.bin')).sort().map((f) => readFileSync(path.join(model, f)));
    };
    const [a, b] = [weights('cold'), weights('warm')];
    const accuracy = (run: string) =>
      (JSON.parse(readFileSync(path.join(tmp, run, 'finetune.json'), 'utf8')) as { results?: { valAccuracy?: number } }).results?.valAccuracy;
    const round = (x: number) => Math.round(x * 100) / 100;
    return {
      command: `finetune ${args('<out>').join(' ')}`,
      cold,
      warm,
      wallSpeedup: round(cold.wallSeconds / warm.wallSeconds),
      cpuSpeedup: round(cold.cpuSeconds / warm.cpuSeconds),
      identicalWeights: a.length > 0 && a.length === b.length && a.every((buf, i) => buf.equals(b[i]!)),
      valAccuracy: { cold: accuracy('cold'), warm: accuracy('warm') },
      cacheBytes: folderBytes(env.FINETUNE_CACHE_DIR),
    };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function timedRun(args: string[], env: NodeJS.ProcessEnv, tmp: string, limitSeconds: number): Promise<CacheRun> {
  const resultFile = path.join(tmp, `result-${Date.now()}.json`);
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(repoRoot, 'bench/cache-child.mjs'), resultFile, ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: limitSeconds * 1000,
    });
    let stderr = '';
    child.stdout.resume();
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (status) => {
      const wallSeconds = Math.round((performance.now() - started) / 100) / 10;
      if (status !== 0 || !existsSync(resultFile)) {
        reject(new Error(`finetune exited with ${status ?? 'a signal (time limit?)'}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`));
        return;
      }
      const { cpuSeconds } = JSON.parse(readFileSync(resultFile, 'utf8')) as { cpuSeconds: number };
      resolve({
        wallSeconds,
        cpuSeconds: Math.round(cpuSeconds * 10) / 10,
        loadAverage: os.loadavg().map((x) => Math.round(x * 100) / 100),
        cacheLines: stderr.split('\n').filter((l) => /from the cache/.test(l)),
      });
    });
  });
}

function folderBytes(dir: string): number {
  if (!existsSync(dir)) return 0;
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .reduce((n, e) => n + statSync(path.join(e.parentPath, e.name)).size, 0);
}

export function formatCacheBench(backend: string, r: CacheBenchResult): string {
  return [
    `cache (${backend}): ${r.command}`,
    `  cold ${r.cold.wallSeconds} s wall, ${r.cold.cpuSeconds} CPU s (load ${r.cold.loadAverage.join(' ')}); ` +
      `warm ${r.warm.wallSeconds} s wall, ${r.warm.cpuSeconds} CPU s (load ${r.warm.loadAverage.join(' ')})`,
    `  speed-up ${r.wallSpeedup}× wall, ${r.cpuSpeedup}× CPU; weights ${r.identicalWeights ? 'byte-identical' : 'DIFFER'}; ` +
      `val accuracy ${r.valAccuracy.cold} / ${r.valAccuracy.warm}; cache ${(r.cacheBytes / 1024 ** 2).toFixed(1)} MiB`,
    ...r.warm.cacheLines.map((l) => `  warm: ${l.trim()}`),
  ].join('\n');
}
