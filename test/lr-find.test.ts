/**
 * `finetune lr-find`: the learning-rate range test's arithmetic (the sweep, fastai's valley) and the
 * command on tiny data: its files, the curve's fields, a suggestion inside the sweep, clear refusals.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { steepest, sweepRate, valley } from '../src/train/lr-find.js';
import { runCli } from './helpers/run-cli.js';
import { needShared, repoRoot, sharedMobileNetWeights, TM_WEIGHTS } from './helpers/shared.js';

const bin = path.join(repoRoot, 'bin/finetune.js');
const shapes = path.join(repoRoot, 'fixtures/shapes');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-lr-find-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the range test arithmetic', () => {
  it('sweeps exponentially from the start rate to the end rate', () => {
    expect(sweepRate(1e-7, 10, 100, 0)).toBeCloseTo(1e-7, 15);
    expect(sweepRate(1e-7, 10, 100, 99)).toBeCloseTo(10, 9);
    expect(sweepRate(1e-4, 1e-2, 3, 1)).toBeCloseTo(1e-3, 12); // the geometric middle
  });

  it("valley lands on the falling stretch of a flat → falling → rising curve, steepest where it falls fastest", () => {
    const lrs = Array.from({ length: 100 }, (_, i) => sweepRate(1e-7, 10, 100, i));
    // Flat (slightly rising) at 2 up to step 40, falling to 0.5 by step 70 (fastest at 55), then rising fast.
    const loss = lrs.map((_, i) => (i < 40 ? 2 + i * 1e-4 : i < 70 ? 2 - 1.5 * (0.5 - 0.5 * Math.cos((Math.PI * (i - 40)) / 30)) : 0.5 + 0.2 * (i - 70)));
    const v = valley(loss, 100);
    expect(v).toBeGreaterThan(40);
    expect(v).toBeLessThan(70);
    const s = steepest(lrs, loss, 100);
    expect(s).toBeGreaterThanOrEqual(53);
    expect(s).toBeLessThanOrEqual(56);
  });
});

describe('finetune lr-find', () => {
  const weights = sharedMobileNetWeights() ?? 'none';
  const common = ['--alpha', '0.35', '--image-size', '32', '--weights', weights, '--backend', 'wasm'];

  it('writes lr-find.png and lr-find.json, and prints a suggestion inside the sweep with the command that uses it', async () => {
    const out = path.join(dir, 'stage1');
    const run = await runCli(process.execPath, [bin, 'lr-find', shapes, ...common, '--steps', '30', '--start-lr', '1e-6', '--end-lr', '1', '--out', out]);
    expect(run.status, run.stderr).toBe(0);
    const png = readFileSync(path.join(out, 'lr-find.png'));
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    const json = JSON.parse(readFileSync(path.join(out, 'lr-find.json'), 'utf8'));
    expect(json).toMatchObject({ format: 'finetune-lr-find/1', stage: 1, sweep: { startLr: 1e-6, endLr: 1, steps: 30 } });
    const points = json.points as { lr: number; loss: number; smoothed: number }[];
    expect(points.length).toBeGreaterThanOrEqual(10);
    expect(points.length).toBeLessThanOrEqual(30);
    expect(points[0]!.lr).toBeCloseTo(1e-6, 12);
    for (let i = 1; i < points.length; i++) expect(points[i]!.lr).toBeGreaterThan(points[i - 1]!.lr);
    for (const p of points) expect(Number.isFinite(p.loss) && Number.isFinite(p.smoothed)).toBe(true);
    const { lr, method, flag } = json.suggestion;
    expect(method).toBe('valley');
    expect(flag).toBe('--lr');
    expect(lr).toBeGreaterThanOrEqual(points[0]!.lr);
    expect(lr).toBeLessThanOrEqual(points.at(-1)!.lr);
    expect(run.stdout).toMatch(/suggested --lr: \S+ \(fastai's valley\)/);
    expect(run.stdout).toMatch(new RegExp(`to use it: finetune \\S*shapes --alpha 0.35 --image-size 32 .*--lr \\S+`));
  }, 120_000);

  it('--stage 2 trains the head first, then sweeps the unfrozen blocks and suggests --fine-tune-lr', async (ctx) => {
    needShared(ctx, 'a stage 2 of pretrained blocks to sweep', TM_WEIGHTS);
    const out = path.join(dir, 'stage2');
    const run = await runCli(process.execPath, [bin, 'lr-find', shapes, ...common, '--stage', '2', '--epochs', '2', '--steps', '20', '--out', out]);
    expect(run.status, run.stderr).toBe(0);
    const json = JSON.parse(readFileSync(path.join(out, 'lr-find.json'), 'utf8'));
    expect(json.stage).toBe(2);
    expect(json.suggestion.flag).toBe('--fine-tune-lr');
    expect(json.trainable).toEqual(expect.arrayContaining(['Conv_1', 'block_16_project', 'head_logits']));
    expect(run.stdout).toMatch(/--epochs 2 .*--fine-tune-lr \S+$/m);
    expect(run.stderr + run.stdout).toMatch(/stage 1: training the head for 2 epochs/);
    // Without --epochs the head is solved first, as training solves it by default.
    const solvedOut = path.join(dir, 'stage2-solved');
    const solved = await runCli(process.execPath, [bin, 'lr-find', shapes, ...common, '--stage', '2', '--steps', '20', '--out', solvedOut]);
    expect(solved.status, solved.stderr).toBe(0);
    expect(solved.stderr + solved.stdout).toMatch(/stage 1: solving the head \(λ 0.01\) before sweeping stage 2's rate/);
    expect(JSON.parse(readFileSync(path.join(solvedOut, 'lr-find.json'), 'utf8')).suggestion.flag).toBe('--fine-tune-lr');
  }, 120_000);

  it('refuses a sweep that does not rise, too few steps, and --stage 2 without pretrained weights: status 2, one line', async () => {
    const cases: [string[], RegExp][] = [
      [['--start-lr', '1', '--end-lr', '0.1'], /--start-lr 1 and --end-lr 0.1 are not valid/],
      [['--steps', '5'], /--steps.*≥ 10/],
      [['--stage', '2', '--weights', 'none'], /--stage 2 .*--weights none/],
    ];
    for (const [args, message] of cases) {
      const out = path.join(dir, 'refused');
      const run = await runCli(process.execPath, [bin, 'lr-find', shapes, ...common, ...args, '--out', out]);
      expect(run.status, run.stderr).toBe(2);
      expect(run.stderr.trim().split('\n')[0]).toMatch(message);
      expect(existsSync(path.join(out, 'lr-find.json'))).toBe(false);
    }
  });

  it('a data folder without images fails with a message naming it', async () => {
    const run = await runCli(process.execPath, [bin, 'lr-find', path.join(dir, 'nothing-here'), ...common, '--out', dir]);
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/nothing-here/);
  });
});
