/**
 * Every measurement that touches a tfjs backend runs in a child process of its own (bench/job.ts):
 * the backend starts fresh, one model's memory (the WebAssembly heap only grows) does not weigh on
 * the next, and a batch that exhausts memory — on WASM a trap that leaves the module unusable —
 * can be retried smaller in a new process. Every job runs under a time limit: past it the process is
 * killed and the measurement reported as stopped, so no measurement can hold up the rest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BackendName, EngineInfo } from '../src/engine/backend.js';
import type { StepBudget } from './measure.js';
import type { ModelConfig, SpeedKind } from './model-speed.js';
import type { AccuracyRunSpec } from './accuracy.js';
import type { StagedOptions } from './staged.js';
import type { CountsJobSpec } from './counts.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export type Job =
  | { kind: 'speed'; backend: BackendName; config: ModelConfig; measurement: SpeedKind; batch: number; budget: StepBudget }
  | { kind: 'staged'; backend: BackendName; options: StagedOptions }
  | { kind: 'accuracy'; backend: BackendName; run: AccuracyRunSpec }
  | { kind: 'counts'; backend: BackendName; counts: CountsJobSpec };

/** What a job process reports. */
export interface JobOutput<T = unknown> {
  engine?: EngineInfo;
  result?: T;
  error?: string;
  /** The failure looks like exhausted memory (worth retrying with less). */
  outOfMemory?: boolean;
  /** The job was killed at its time limit. */
  timedOut?: boolean;
}

const viteNode = path.join(repoRoot, 'node_modules/vite-node/vite-node.mjs');

let active: ChildProcess | undefined;

/**
 * Stops the job in progress, if any (when the benchmark is interrupted). SIGKILL: a job busy in a
 * long kernel does not get to handle a gentler signal.
 */
export function killActiveJob(): void {
  active?.kill('SIGKILL');
}

/** Runs `job` in a new process, killed after `timeLimitSeconds`; its progress lines go to our stderr. */
export async function runJob<T>(job: Job, timeLimitSeconds: number): Promise<JobOutput<T>> {
  if (!existsSync(viteNode)) throw new Error(`${viteNode} is missing: run npm install`);
  const dir = mkdtempSync(path.join(tmpdir(), 'finetune-bench-job-'));
  const specFile = path.join(dir, 'job.json');
  const outFile = path.join(dir, 'out.json');
  writeFileSync(specFile, JSON.stringify(job));
  try {
    let tail = '';
    let timedOut = false;
    const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      const child = spawn(process.execPath, [viteNode, '--config', path.join(repoRoot, 'bench/vite.config.ts'), path.join(repoRoot, 'bench/job.ts'), specFile, outFile], {
        cwd: repoRoot,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      active = child;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeLimitSeconds * 1000);
      const relay = lineRelay((line) => {
        process.stderr.write(line + '\n');
        tail = (tail + line + '\n').slice(-4000);
      });
      child.stdout.on('data', relay.write);
      child.stderr.on('data', relay.write);
      child.on('error', reject);
      child.on('close', (c, s) => {
        clearTimeout(timer);
        active = undefined;
        relay.flush();
        resolve({ code: c, signal: s });
      });
    });
    if (existsSync(outFile)) return JSON.parse(readFileSync(outFile, 'utf8')) as JobOutput<T>;
    if (timedOut) {
      return { error: `stopped at its time limit of ${timeLimitSeconds} s (--time-limit to change)`, timedOut: true };
    }
    const lastLine = tail.trim().split('\n').filter((l) => l.trim()).at(-1) ?? '';
    const how = signal ? `was killed (${signal})` : `exited with status ${code}`;
    return {
      error: `the measuring process ${how} without a result${lastLine ? `: ${lastLine.trim()}` : ''}`,
      // Killed by the OS (SIGKILL: the OOM killer) or aborted by an allocation failure.
      outOfMemory: signal === 'SIGKILL' || /memory|allocation|Aborted\(\)/i.test(tail),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const MAX_LINE = 300;

/**
 * Passes output on line by line, each cut to MAX_LINE characters: an aborted Emscripten module
 * prints its whole minified source as one line of its stack trace.
 */
function lineRelay(emit: (line: string) => void): { write: (chunk: Buffer) => void; flush: () => void } {
  let partial = '';
  let overflowing = false;
  return {
    write(chunk) {
      const parts = chunk.toString().split('\n');
      parts.forEach((part, i) => {
        if (!overflowing) {
          partial += part;
          if (partial.length > MAX_LINE) {
            partial = `${partial.slice(0, MAX_LINE)}…`;
            overflowing = true;
          }
        }
        if (i < parts.length - 1) {
          emit(partial);
          partial = '';
          overflowing = false;
        }
      });
    },
    flush() {
      if (partial) emit(partial);
      partial = '';
    },
  };
}
