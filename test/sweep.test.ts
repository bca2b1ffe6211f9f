import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Command, type Option } from 'commander';
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addTrainingOptions, toFineTuneOptions } from '../src/cli/main.js';
import { makeShapesDataset } from '../src/data/synthetic.js';
import { UsageError } from '../src/errors.js';
import { resolveOptions } from '../src/finetune.js';
import { renderSweep } from '../src/report/sweep-plot.js';
import { planSweep } from '../src/sweep/plan.js';
import { failedRunsError, runSweep, sweepCsv, sweepPanels, type SweepRunResult } from '../src/sweep/sweep.js';
import { runCli } from './helpers/run-cli.js';
import { needShared, repoRoot, sharedMobileNetWeights, TM_WEIGHTS } from './helpers/shared.js';

const bin = path.join(repoRoot, 'bin/finetune.js');
let dir: string;
let data: string;
let weights: string;

beforeAll(async () => {
  if (!existsSync(path.join(repoRoot, 'dist/cli/main.js'))) throw new Error('dist/ is missing: run `npm run build` (npm test does it first)');
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-sweep-'));
  data = path.join(dir, 'data');
  await makeShapesDataset(data, { trainPerClass: 8, validPerClass: 4, testCount: 0, size: 48, seed: 3 });
  weights = sharedMobileNetWeights() ?? 'none';
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The plan `finetune sweep` makes for these base flags and --vary texts, with the real options and checks. */
function plan(base: string[], vary: string[], grid = false) {
  const command = addTrainingOptions(new Command('t').argument('<data>').exitOverride());
  const options: readonly Option[] = [...command.options];
  command.parse(['node', 't', 'data', ...base]);
  return planSweep({ data, baseFlags: command.opts(), varySpecs: vary, grid, trainingOptions: options, toOptions: toFineTuneOptions, resolve: resolveOptions });
}

describe('planning a sweep', () => {
  it('runs the baseline first, then each value in the order given, one flag changed at a time; a base value is not run twice', () => {
    const p = plan(['--image-size', '96', '--lr', '0.001'], ['image-size=128,96,64', '--lr=1e-2,0.001', 'augment=none']);
    expect(p.runs.map((r) => r.name)).toEqual(['base', 'image-size=128', 'image-size=64', 'lr=0.01', 'augment=none']);
    expect(p.sameAs).toEqual([{ name: 'image-size=96', run: 'base' }, { name: 'lr=0.001', run: 'base' }]);
    expect(p.runs.map((r) => r.resolved.imageSize)).toEqual([96, 128, 64, 96, 96]);
    expect(p.runs.map((r) => r.resolved.lr)).toEqual([0.001, 0.001, 0.001, 0.01, 0.001]);
    // Everything else stays the base run's: --fine-tune-lr follows --lr, as it does on its own.
    expect(p.runs[3]!.resolved.fineTuneLr).toBeCloseTo(0.001);
    expect(p.runs.map((r) => r.resolved.augment)).toEqual(['light', 'light', 'light', 'light', 'none']);
  });

  it('--grid runs the cross product, named by every varied flag, and no separate baseline', () => {
    const p = plan(['--image-size', '96'], ['image-size=64,128', 'lr=0.01,0.1,0.2'], true);
    expect(p.runs).toHaveLength(6);
    expect(p.runs.map((r) => r.name)).toEqual([
      'image-size=64,lr=0.01', 'image-size=64,lr=0.1', 'image-size=64,lr=0.2',
      'image-size=128,lr=0.01', 'image-size=128,lr=0.1', 'image-size=128,lr=0.2',
    ]);
    // One factor at a time, the same --vary: the baseline and 2 + 3 changed runs.
    expect(plan(['--image-size', '96'], ['image-size=64,128', 'lr=0.01,0.1,0.2']).runs).toHaveLength(6);
  });

  it('varies an on/off flag as true,false and a choice through its own choices', () => {
    const p = plan([], ['train-bn=true,false', 'resize=stretch,pad']);
    expect(p.runs.map((r) => r.name)).toEqual(['base', 'train-bn=true', 'resize=stretch', 'resize=pad']);
    expect(p.runs[1]!.resolved.trainBatchNorm).toBe(true);
  });

  it('sweep.png has a panel per varied flag: the baseline and that flag\'s runs, or with --grid a series per combination of the others', async () => {
    const fake = (p: ReturnType<typeof plan>): SweepRunResult[] =>
      p.runs.map((run, i) => ({ run, folder: run.name, state: 'new', status: 'done', valAccuracy: 0.8 + i / 100, valCI95: [0.7, 0.9] }));
    const oneAtATime = plan(['--image-size', '96'], ['image-size=64,128', 'augment=none,strong']);
    const panels = sweepPanels(oneAtATime, fake(oneAtATime));
    expect(panels.map((p) => [p.flag, p.values, p.baseValue, p.series.length])).toEqual([
      ['image-size', [96, 64, 128], 96, 1],
      ['augment', ['light', 'none', 'strong'], 'light', 1],
    ]);
    expect(panels[1]!.series[0]!.points.map((pt) => [pt.value, Number(pt.accuracy!.toFixed(6))])).toEqual([['light', 0.8], ['none', 0.83], ['strong', 0.84]]);
    expect(sweepCsv(oneAtATime, fake(oneAtATime)).split('\n')[4]).toBe('augment=none,augment,96,none,0.83,0.7,0.9,,,,,,done');

    const grid = plan([], ['image-size=64,128', 'lr=0.01,0.1,0.2'], true);
    const gridPanels = sweepPanels(grid, fake(grid));
    expect(gridPanels.map((p) => p.series.map((s) => s.label))).toEqual([
      ['lr=0.01', 'lr=0.1', 'lr=0.2'],
      ['image-size=64', 'image-size=128'],
    ]);
    const png = await sharp(await renderSweep(gridPanels)).metadata();
    expect([png.format, png.width]).toEqual(['png', 2 * 460]);
  });

  it.each([
    [['epochs=1,x'], /^--vary epochs=x: --epochs needs a number, got 'x'\.$/],
    [['epochs=0'], /^sweep run epochs=0 \(--epochs 0\): --epochs 0 is not valid/],
    [['resize=squash'], /^--vary resize=squash: --resize squash is not valid: use one of stretch, crop, pad\.$/],
    [['colour=1'], /^--vary colour: there is no training flag --colour/],
    [['ema=1'], /^sweep run ema=1 \(--ema 1\): --ema 1 is not valid/],
    [['out=a,b'], /^--vary out: --out cannot vary: it is the sweep folder/],
    [['export=onnx'], /^--vary export: --export cannot vary/],
    [['image-size'], /write it as <flag>=<v1>,<v2>/],
    [['lr=0.1', 'lr=0.2'], /--vary lr is given twice/],
    [[], /needs at least one --vary/],
  ])('refuses --vary %j in one line', (vary, message) => {
    expect(() => plan([], vary)).toThrow(UsageError);
    expect(() => plan([], vary)).toThrow(message);
  });
});

describe('runSweep in one process', () => {
  /** Runs a three-run sweep, counting the tensors held as runs 2 and 3 start and after the last. */
  const sweepCountingTensors = async (p: ReturnType<typeof plan>, out: string) => {
    const counts: number[] = [];
    const results = await runSweep({
      plan: p,
      out,
      log: (line) => {
        if (/^run [23]\/3/.test(line)) counts.push(tf.memory().numTensors);
      },
    });
    counts.push(tf.memory().numTensors);
    return { results, counts };
  };

  it('leaves no tensors behind from one run to the next', async () => {
    const p = plan(
      ['--alpha', '0.35', '--image-size', '32', '--weights', weights, '--epochs', '1', '--fine-tune-epochs', '1', '--batch-size', '8', '--augment', 'none', '--backend', 'wasm'],
      ['image-size=40,36'],
    );
    const { results, counts } = await sweepCountingTensors(p, path.join(dir, 'in-process'));
    expect(results.map((r) => `${r.run.name} ${r.status}`)).toEqual(['base done', 'image-size=40 done', 'image-size=36 done']);
    expect(counts).toHaveLength(3);
    expect(new Set(counts).size, `tensors after each run: ${counts.join(', ')}`).toBe(1);
  }, 300_000);

  it('a sweep over a stage-2 flag trains stage 1 once: the other runs take it from the cache, and hold no tensors after', async (ctx) => {
    // With --weights none there is no stage 2, so nothing to share.
    needShared(ctx, 'a staged sweep', `${TM_WEIGHTS}/model.json`);
    const p = plan(
      ['--alpha', '0.35', '--image-size', '32', '--weights', weights, '--epochs', '2', '--fine-tune-epochs', '1', '--batch-size', '8', '--augment', 'none', '--backend', 'wasm'],
      ['fine-tune-lr=0.0005,0.00002'],
    );
    const out = path.join(dir, 'stage-2-flag');
    const { results, counts } = await sweepCountingTensors(p, out);
    expect(results.map((r) => `${r.run.name} ${r.status}`)).toEqual(['base done', 'fine-tune-lr=0.0005 done', 'fine-tune-lr=0.00002 done']);
    const fromCache = (run: string) =>
      (JSON.parse(readFileSync(path.join(out, run, 'finetune.json'), 'utf8')) as { results: { stage1FromCache?: boolean } }).results.stage1FromCache;
    expect(['base', 'fine-tune-lr=0.0005', 'fine-tune-lr=0.00002'].map(fromCache)).toEqual([undefined, true, true]);
    expect(new Set(counts).size, `tensors after each run: ${counts.join(', ')}`).toBe(1);
  }, 300_000);

  it('a --folds sweep reports each run\'s folds mean as its validation accuracy', async (ctx) => {
    // --folds needs pretrained weights (it is refused with --weights none).
    needShared(ctx, 'a --folds run', `${TM_WEIGHTS}/model.json`);
    const p = plan(
      ['--alpha', '0.35', '--image-size', '32', '--weights', weights, '--epochs', '1', '--fine-tune-epochs', '0', '--batch-size', '8', '--augment', 'none', '--backend', 'wasm', '--folds', '2'],
      ['lr=0.01'],
    );
    const out = path.join(dir, 'folds');
    const results = await runSweep({ plan: p, out });
    expect(results.map((r) => `${r.run.name} ${r.status}`)).toEqual(['base done', 'lr=0.01 done']);
    for (const r of results) {
      const config = JSON.parse(readFileSync(path.join(r.folder, 'finetune.json'), 'utf8')) as { results: { valAccuracy: number; valLoss: number } };
      expect(r.valAccuracy).toBe(config.results.valAccuracy);
      expect(r.valLoss).toBe(config.results.valLoss);
    }
    const csv = sweepCsv(p, results).trim().split('\n');
    expect(csv[1]).toMatch(/^base,base,0\.001,0\.\d+,,,\d/); // accuracy and loss; no Wilson interval for a mean over folds
  }, 300_000);

  it('a run that fails is recorded with its reason and the sweep goes on', async (ctx) => {
    // Without pretrained weights there is no stage 2, so no --unfreeze-from to refuse.
    needShared(ctx, 'a stage-2 layer check', `${TM_WEIGHTS}/model.json`);
    const p = plan(
      ['--alpha', '0.35', '--image-size', '32', '--weights', weights, '--epochs', '1', '--fine-tune-epochs', '1', '--batch-size', '8', '--augment', 'none', '--backend', 'wasm'],
      ['unfreeze-from=no_such_layer,Conv_1'],
    );
    const lines: string[] = [];
    const results = await runSweep({ plan: p, out: path.join(dir, 'failing'), log: (line) => lines.push(line) });
    expect(results.map((r) => `${r.run.name} ${r.status}`)).toEqual(['base done', 'unfreeze-from=no_such_layer failed', 'unfreeze-from=Conv_1 done']);
    expect(results[1]!.error).toMatch(/^--unfreeze-from no_such_layer is not a layer of the backbone/);
    expect(lines).toContainEqual(expect.stringMatching(/^run 2\/3: --unfreeze-from=no_such_layer failed: --unfreeze-from no_such_layer is not a layer/));
    const csv = sweepCsv(p, results).trim().split('\n');
    expect(csv[2]).toMatch(/^unfreeze-from=no_such_layer,unfreeze-from,no_such_layer,,,,,,,,,"failed: --unfreeze-from no_such_layer is not a layer/);
    expect(failedRunsError(results)?.message).toMatch(/^1 of 3 sweep runs failed: unfreeze-from=no_such_layer \(--unfreeze-from no_such_layer/);
  }, 300_000);
});

/** Runs `finetune sweep` until `when(stderr)` holds, then sends SIGINT (never, without `when`). */
function sweep(args: string[], when?: (stderr: string) => boolean) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [bin, 'sweep', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let sent = false;
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      if (!sent && when?.(stderr)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('finetune sweep (child process)', () => {
  // Tiny runs: these are about which runs happen, in which folders, and what is left behind.
  const base = () => [
    data, '--alpha', '0.35', '--image-size', '32', '--weights', weights, '--epochs', '6', '--patience', '20',
    '--fine-tune-epochs', '0', '--batch-size', '8', '--augment', 'none', '--backend', 'wasm',
  ];

  it.each([
    [['--vary', 'colour=red'], /--vary colour: there is no training flag --colour/, 1],
    [['--vary', 'image-size=48,20'], /sweep run image-size=20 \(--image-size 20\): --image-size 20/, 1],
    [['--vary', 'out=a,b'], /--out cannot vary/, 1],
    // A base option commander refuses: its line, and the same hint as for a single run.
    [['--vary', 'lr=0.1', '--lr', 'fast'], /--lr needs a number, got 'fast'/, 2],
  ])('%j fails in one line with status 2 before any run starts', async (vary, message, lines) => {
    const out = path.join(dir, 'refused');
    const run = await runCli(process.execPath, [bin, 'sweep', ...base(), ...vary, '--out', out], { timeout: 60_000 });
    expect(run.status, run.stderr).toBe(2);
    expect(run.stderr).toMatch(message);
    expect(run.stderr.trim().split('\n')[0]).toMatch(message);
    expect(run.stderr.trim().split('\n')).toHaveLength(lines);
    expect(existsSync(out), 'no run folder, no sweep folder').toBe(false);
  }, 60_000);

  it('runs each run once in its folder, writes sweep.csv and sweep.png; stopped in run 2, run again it skips run 1 and resumes run 2', async () => {
    const out = path.join(dir, 'sweep');
    const args = [...base(), '--vary', 'image-size=40,32', '--out', out];
    // Ctrl-C once run 2 has saved an epoch: its checkpoint is what the next sweep resumes.
    const stopped = await sweep(args, (s) => /run 2\/2: --image-size=40[^]*stage 1 epoch 2:/.test(s));
    expect(stopped.code, stopped.stderr).toBe(130);
    expect(stopped.stderr).toMatch(/finetune sweep: 2 runs into .*: base, image-size=40 \(image-size=32 is base\)/);
    expect(stopped.stderr).toMatch(/run 1\/2: base \(no change\)/);
    expect(stopped.stderr).toMatch(/interrupted during run 2\/2: --image-size=40\. Run the same finetune sweep command again/);
    expect(readdirSync(out).sort()).toEqual(['base', 'image-size=40', 'sweep.csv']);
    expect(existsSync(path.join(out, 'image-size=40/checkpoint/state.json'))).toBe(true);
    // sweep.csv is written after each run: the stopped sweep has its finished run's row.
    expect(readFileSync(path.join(out, 'sweep.csv'), 'utf8')).toMatch(/\nbase,base,32,[^\n]*,done\n$/);
    const baseCreated = JSON.parse(readFileSync(path.join(out, 'base/finetune.json'), 'utf8')).created;

    const resumed = await sweep(args);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(/run 1\/2: base \(no change\): complete, skipped/);
    expect(resumed.stderr).toMatch(/run 2\/2: --image-size=40 \(resuming the interrupted run\)/);
    expect(resumed.stderr).toMatch(/resuming after stage 1, epoch [2-6]/);
    expect(JSON.parse(readFileSync(path.join(out, 'base/finetune.json'), 'utf8')).created, 'base was not trained again').toBe(baseCreated);
    const history = readFileSync(path.join(out, 'image-size=40/history.csv'), 'utf8').trim().split('\n');
    expect(history).toHaveLength(1 + 6);
    expect(existsSync(path.join(out, 'image-size=40/checkpoint'))).toBe(false);

    // The runs table and each accuracy with its interval on stdout; the files beside the runs.
    expect(resumed.stdout).toMatch(/2 runs in .* \(1 trained now, 1 complete before\)/);
    expect(resumed.stdout).toMatch(/^name\s+backbone\s+image-size\s+val acc/m);
    expect(resumed.stdout).toMatch(/^ {2}image-size=40\s+\d\.\d{3} {2}\(\d\.\d{3}–\d\.\d{3}\)/m);
    const csv = readFileSync(path.join(out, 'sweep.csv'), 'utf8').trim().split('\n').map((l) => l.split(','));
    expect(csv[0]).toEqual(['run', 'varied', 'image-size', 'val_accuracy', 'val_ci95_low', 'val_ci95_high', 'val_loss', 'test_accuracy', 'seconds', 'cpu_seconds', 'load1', 'status']);
    expect(csv.slice(1).map((r) => [r[0], r[1], r[2], r[11]])).toEqual([
      ['base', 'base', '32', 'skipped'],
      ['image-size=40', 'image-size', '40', 'done'],
    ]);
    for (const row of csv.slice(1)) {
      const [acc, lo, hi] = [Number(row[3]), Number(row[4]), Number(row[5])];
      expect(lo).toBeLessThanOrEqual(acc);
      expect(hi).toBeGreaterThanOrEqual(acc);
      expect(Number(row[8])).toBeGreaterThan(0); // wall seconds from the run's finetune.json
      expect(Number(row[9]), 'CPU seconds: measured now, or kept from the sweep that trained it').toBeGreaterThan(0);
    }
    const png = await sharp(path.join(out, 'sweep.png')).metadata();
    expect([png.format, png.width, png.height]).toEqual(['png', 460, 340]); // one panel

    // Once more: nothing left to do.
    const again = await sweep([...args, '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr.match(/complete, skipped/g)).toHaveLength(2);
    const json = JSON.parse(again.stdout);
    expect(json.runs.map((r: { name: string; status: string }) => `${r.name} ${r.status}`)).toEqual(['base skipped', 'image-size=40 skipped']);

    // Other base options into the same folder: refused before anything runs, saying what differs.
    const other = await runCli(process.execPath, [bin, 'sweep', ...base(), '--lr', '0.01', '--vary', 'image-size=40', '--out', out], { timeout: 60_000 });
    expect(other.status, other.stderr).toBe(2);
    expect(other.stderr).toMatch(/base holds a run with other options \(--lr was 0\.001, now 0\.01; --fine-tune-lr was 0\.0001, now 0\.001\)/);
  }, 300_000);

  it('refuses a run folder that holds files no run wrote', async () => {
    const out = path.join(dir, 'foreign');
    mkdirSync(path.join(out, 'base'), { recursive: true });
    writeFileSync(path.join(out, 'base/notes.txt'), 'mine');
    const run = await runCli(process.execPath, [bin, 'sweep', ...base(), '--vary', 'image-size=40', '--out', out], { timeout: 60_000 });
    expect(run.status, run.stderr).toBe(2);
    expect(run.stderr).toMatch(/base holds files that are not a finetune run's \(notes\.txt\)/);
    expect(readdirSync(out)).toEqual(['base']);
  }, 60_000);
});
