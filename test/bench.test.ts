import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { BenchReport } from '../bench/report.js';
import { repoRoot } from './helpers/shared.js';

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
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/--only speed: use decode, forward, train, staged/);
  });
});
