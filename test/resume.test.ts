import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeShapesDataset } from '../src/data/synthetic.js';
import { FinetuneError, InterruptedError, UsageError } from '../src/errors.js';
import { fineTune, type FineTuneOptions } from '../src/finetune.js';
import { loadModelDir } from '../src/io/model-io.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import type { Callback } from '../src/train/learner.js';
import { repoRoot, sharedMobileNetWeights } from './helpers/shared.js';

let dir: string;
let data: string;
let weights: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-resume-'));
  data = path.join(dir, 'data');
  await makeShapesDataset(data, { trainPerClass: 8, validPerClass: 4, testCount: 3, size: 64, seed: 5 });
  weights = sharedMobileNetWeights() ?? 'none';
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const base = (): FineTuneOptions => ({
  data,
  backbone: 'mobilenetv2',
  alpha: 0.35,
  imageSize: 96,
  weights,
  epochs: 4,
  fineTuneEpochs: 2,
  batchSize: 8,
  lr: 3e-3,
  augment: 'light',
  patience: 10,
  seed: 7,
  backend: 'wasm',
});

/** A callback that aborts the run at the end of (stage, epoch). */
function abortAfter(stage: number, epoch: number, controller: AbortController): Callback {
  return {
    onEpochEnd(ctx) {
      if (ctx.stage === stage && ctx.epoch === epoch) controller.abort();
    },
  };
}

function historyRows(out: string): string[][] {
  return readFileSync(path.join(out, 'history.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(',').slice(0, 7));
}

async function expectSameRun(a: string, b: string) {
  const [ha, hb] = [historyRows(a), historyRows(b)];
  expect(hb.map((r) => r.slice(0, 2))).toEqual(ha.map((r) => r.slice(0, 2)));
  ha.forEach((row, i) => row.slice(2).forEach((v, j) => expect(Number(hb[i]![j + 2])).toBeCloseTo(Number(v), 4)));
  const [ma, mb] = [await loadModelDir(path.join(a, 'model')), await loadModelDir(path.join(b, 'model'))];
  let maxDiff = 0;
  ma.getWeights().forEach((w, i) => {
    const [x, y] = [w.dataSync(), mb.getWeights()[i]!.dataSync()];
    for (let k = 0; k < x.length; k++) maxDiff = Math.max(maxDiff, Math.abs(x[k]! - y[k]!));
  });
  expect(maxDiff).toBeLessThan(1e-4);
  ma.dispose();
  mb.dispose();
}

describe('interruption and resume', () => {
  let uninterrupted: string;

  beforeAll(async () => {
    uninterrupted = path.join(dir, 'whole');
    await fineTune({ ...base(), out: uninterrupted });
  });

  it('a run stopped in stage 1 and resumed ends like one that was never stopped', async () => {
    const out = path.join(dir, 'stage1');
    const controller = new AbortController();
    const stopped = fineTune({ ...base(), out, signal: controller.signal, callbacks: [abortAfter(1, 2, controller)] });
    await expect(stopped).rejects.toThrow(InterruptedError);
    await expect(stopped).rejects.toThrow(/saved as of stage 1, epoch 2; .*--resume/);
    expect((await loadCheckpoint(path.join(out, 'checkpoint')))?.state).toMatchObject({ stage: 1, epoch: 2 });

    const result = await fineTune({ ...base(), out, resume: true });
    expect(result.history.map((h) => `${h.stage}.${h.epoch}`)).toEqual(historyRows(uninterrupted).map((r) => `${r[0]}.${r[1]}`));
    await expectSameRun(uninterrupted, out);
    expect(existsSync(path.join(out, 'checkpoint'))).toBe(false); // a finished run keeps no checkpoint
  });

  it('a run stopped in stage 2 resumes there', async () => {
    if (weights === 'none') return console.warn('note: no stage 2 without pretrained weights (../shared absent)');
    const out = path.join(dir, 'stage2');
    const controller = new AbortController();
    await expect(
      fineTune({ ...base(), out, signal: controller.signal, callbacks: [abortAfter(2, 1, controller)] }),
    ).rejects.toThrow(/stage 2, epoch 1/);
    await fineTune({ ...base(), out, resume: true });
    await expectSameRun(uninterrupted, out);
  });

  it('refuses to resume with other options, other data, or without a checkpoint', async () => {
    const out = path.join(dir, 'refuse');
    const controller = new AbortController();
    await expect(fineTune({ ...base(), out, signal: controller.signal, callbacks: [abortAfter(1, 1, controller)] })).rejects.toThrow(
      InterruptedError,
    );
    await expect(fineTune({ ...base(), out, resume: true, lr: 0.01 })).rejects.toThrow(UsageError);
    await expect(fineTune({ ...base(), out, resume: true, lr: 0.01 })).rejects.toThrow(/--lr was 0.003, now 0.01/);
    const copy = path.join(dir, 'data-changed');
    await makeShapesDataset(copy, { trainPerClass: 8, validPerClass: 4, testCount: 3, size: 64, seed: 5 });
    writeFileSync(path.join(copy, 'train/circle/extra.png'), readFileSync(path.join(copy, 'train/circle', readdirSync(path.join(copy, 'train/circle'))[0]!)));
    await expect(fineTune({ ...base(), data: copy, out, resume: true })).rejects.toThrow(/not what the interrupted run used/);
    await expect(fineTune({ ...base(), out: path.join(dir, 'empty'), resume: true })).rejects.toThrow(FinetuneError);
    await expect(fineTune({ ...base(), out: path.join(dir, 'empty'), resume: true })).rejects.toThrow(/nothing to resume/);
  });
});

describe('the CLI under signals', () => {
  const bin = path.join(repoRoot, 'bin/finetune.js');
  const args = (out: string) => [
    bin, data, '--backbone', 'mobilenetv2', '--alpha', '0.35', '--image-size', '96', '--weights', weights,
    '--epochs', '40', '--patience', '40', '--fine-tune-epochs', '0', '--batch-size', '8', '--backend', 'wasm', '--out', out,
  ];

  /** Runs the CLI until `when(stderr)` holds, then sends `signal`; resolves with the exit code and output. */
  function runUntil(argv: string[], when: (stderr: string) => boolean, signal: NodeJS.Signals) {
    return new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      let sent = false;
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        if (!sent && when(stderr)) {
          sent = true;
          child.kill(signal);
        }
      });
      child.on('close', (code) => resolve({ code, stderr }));
    });
  }

  it('Ctrl-C stops with status 130 and says how to resume; --resume finishes the run', async () => {
    const out = path.join(dir, 'cli-sigint');
    const stopped = await runUntil(args(out), (s) => /stage 1 epoch 2:/.test(s), 'SIGINT');
    expect(stopped.code).toBe(130);
    expect(stopped.stderr).toMatch(/stopping after this batch/);
    expect(stopped.stderr).toMatch(new RegExp(`--resume ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    const state = (await loadCheckpoint(path.join(out, 'checkpoint')))!.state;
    expect(state.epoch).toBeGreaterThanOrEqual(2);

    const resumed = await runUntil([...args(out).filter((a, i, all) => a !== '--out' && all[i - 1] !== '--out'), '--resume', out], () => false, 'SIGINT');
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(new RegExp(`resuming after stage 1, epoch ${state.epoch}`));
    expect(historyRows(out).length).toBe(40);
  });

  it('kill -9 at any moment leaves the saved model and checkpoint whole', async () => {
    const out = path.join(dir, 'cli-kill');
    for (const delayMs of [2500, 3100, 3700, 4300]) {
      rmSync(out, { recursive: true, force: true });
      const started = Date.now();
      await runUntil(args(out), () => Date.now() - started > delayMs, 'SIGKILL');
      // Whatever is there must be complete: model.json names a weights file of the right size…
      const modelJson = path.join(out, 'model/model.json');
      if (existsSync(modelJson)) {
        const json = JSON.parse(readFileSync(modelJson, 'utf8'));
        const group = json.weightsManifest[0];
        const bytes = group.weights.reduce((n: number, w: { shape: number[] }) => n + 4 * w.shape.reduce((a, b) => a * b, 1), 0);
        expect(statSync(path.join(out, 'model', group.paths[0])).size).toBe(bytes);
        (await loadModelDir(path.join(out, 'model'))).dispose();
      }
      // …and a checkpoint, when there is one, loads.
      if (existsSync(path.join(out, 'checkpoint/state.json'))) {
        expect((await loadCheckpoint(path.join(out, 'checkpoint')))!.state.stage).toBe(1);
      }
    }
  });
});
