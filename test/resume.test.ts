import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeShapesDataset } from '../src/data/synthetic.js';
import { FinetuneError, InterruptedError, UsageError } from '../src/errors.js';
import { fineTune, type FineTuneOptions } from '../src/finetune.js';
import { loadModelDir } from '../src/io/model-io.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import type { Callback } from '../src/train/learner.js';
import { needShared, repoRoot, sharedMobileNetWeights, TM_WEIGHTS } from './helpers/shared.js';

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
    // The frozen backbone's weights stay in the file the first epoch wrote; later epochs write only what trains.
    const state = JSON.parse(readFileSync(path.join(out, 'checkpoint', 'state.json'), 'utf8')) as { weights: { specs: unknown[]; rest?: { specs: unknown[] } } };
    expect(state.weights.rest?.specs).toHaveLength(2); // head_logits' kernel and bias
    expect(readdirSync(path.join(out, 'checkpoint')).filter((f) => f.startsWith('weights-'))).toHaveLength(2);

    const result = await fineTune({ ...base(), out, resume: true });
    expect(result.history.map((h) => `${h.stage}.${h.epoch}`)).toEqual(historyRows(uninterrupted).map((r) => `${r[0]}.${r[1]}`));
    await expectSameRun(uninterrupted, out);
    expect(existsSync(path.join(out, 'checkpoint'))).toBe(false); // a finished run keeps no checkpoint
  });

  it('a run stopped in stage 2 resumes there', async (ctx) => {
    // From random weights a run has one stage (every layer trains), so there is no stage 2 to stop in.
    needShared(ctx, 'a stage 2 (fine-tuning pretrained weights) to stop and resume', TM_WEIGHTS);
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

/** Bytes of the tensors a tfjs weights manifest lists (float32 and int32: 4 each). */
function manifestBytes(specs: { shape: number[]; dtype?: string }[]): number {
  const size: Record<string, number> = { float32: 4, int32: 4, bool: 1 };
  return specs.reduce((n, s) => n + size[s.dtype ?? 'float32']! * s.shape.reduce((a, b) => a * b, 1), 0);
}

/** The epoch the checkpoint in `out` records, or 0 while there is none (state.json is replaced atomically). */
function checkpointEpoch(out: string): number {
  const file = path.join(out, 'checkpoint/state.json');
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { epoch: number }).epoch : 0;
}

/**
 * What a run killed at any moment must leave: model/ whose model.json names a complete weights file
 * and loads, and a checkpoint (of stage 1, epoch ≥ `minEpoch`) whose tensor files are complete and
 * read back. (That it restores into the training model, the --resume that follows each kill shows.)
 * Returns the checkpoint's epoch.
 */
async function expectWholeAfterKill(out: string, minEpoch: number): Promise<number> {
  const modelDir = path.join(out, 'model');
  expect(existsSync(path.join(modelDir, 'model.json')), 'model/model.json after the kill').toBe(true);
  const group = JSON.parse(readFileSync(path.join(modelDir, 'model.json'), 'utf8')).weightsManifest[0];
  expect(statSync(path.join(modelDir, group.paths[0])).size, 'model weights file size').toBe(manifestBytes(group.weights));
  (await loadModelDir(modelDir)).dispose();

  const checkpointDir = path.join(out, 'checkpoint');
  expect(existsSync(path.join(checkpointDir, 'state.json')), 'checkpoint/state.json after the kill').toBe(true);
  const checkpoint = (await loadCheckpoint(checkpointDir))!;
  expect(checkpoint.state.stage).toBe(1);
  expect(checkpoint.state.epoch).toBeGreaterThanOrEqual(minEpoch);
  // Every tensor file state.json names has the size its specs add up to, and decodes.
  const stored = JSON.parse(readFileSync(path.join(checkpointDir, 'state.json'), 'utf8'));
  for (const part of ['weights', 'optimizer', 'best'].filter((p) => stored[p] !== undefined)) {
    const bytes = readFileSync(path.join(checkpointDir, stored[part].file));
    expect(bytes.length, `checkpoint ${part} file size`).toBe(manifestBytes(stored[part].specs));
    const tensors = tf.io.decodeWeights(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength), stored[part].specs);
    expect(Object.keys(tensors), `checkpoint ${part} tensors`).toHaveLength(stored[part].specs.length);
    tf.dispose(Object.values(tensors));
  }
  return checkpoint.state.epoch;
}

describe('the CLI under signals', () => {
  const bin = path.join(repoRoot, 'bin/finetune.js');
  const epochs = 8;
  // Small and one batch an epoch: these runs are about files and signals, and must stay cheap when
  // every layer trains (random weights, without ../shared). A function: `weights` is set in beforeAll.
  const options = () => [
    '--backbone', 'mobilenetv2', '--alpha', '0.35', '--image-size', '32', '--weights', weights,
    '--epochs', String(epochs), '--patience', '40', '--fine-tune-epochs', '0', '--batch-size', '24', '--backend', 'wasm',
  ];
  // What the runs leave is read back here on tfjs's CPU backend (it needs no set-up).
  beforeAll(() => tf.setBackend('cpu'));
  const args = (out: string) => [bin, data, ...options(), '--out', out];
  const resumeArgs = (out: string) => [bin, data, ...options(), '--resume', out];

  /** Runs the CLI until `when(stderr)` holds (checked on each stderr chunk and every few ms), then sends `signal`. */
  function runUntil(argv: string[], when: (stderr: string) => boolean, signal: NodeJS.Signals) {
    return new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stdout.resume(); // the summary: not needed, but the pipe must not fill
      const check = () => {
        if (!child.killed && child.exitCode === null && when(stderr)) child.kill(signal);
      };
      const poll = setInterval(check, 5);
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        check();
      });
      child.on('close', (code, killedBy) => {
        clearInterval(poll);
        resolve({ code, signal: killedBy, stderr });
      });
    });
  }

  it('Ctrl-C stops with status 130 and says how to resume; --resume finishes the run', async () => {
    const out = path.join(dir, 'cli-sigint');
    const stopped = await runUntil(args(out), (s) => /stage 1 epoch 2:/.test(s), 'SIGINT');
    expect(stopped.code, stopped.stderr).toBe(130);
    expect(stopped.stderr).toMatch(/stopping after this batch/);
    expect(stopped.stderr).toMatch(new RegExp(`--resume ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    const state = (await loadCheckpoint(path.join(out, 'checkpoint')))!.state;
    expect(state.epoch).toBeGreaterThanOrEqual(2);

    const resumed = await runUntil(resumeArgs(out), () => false, 'SIGINT');
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(new RegExp(`resuming after stage 1, epoch ${state.epoch}`));
    expect(historyRows(out).length).toBe(epochs);
  }, 600_000);

  it('kill -9 at any moment leaves the saved model and checkpoint whole; --resume carries on each time', async () => {
    const out = path.join(dir, 'cli-kill');
    // Each kill waits for something the run has done (never for the clock), so it lands after the
    // first checkpoint; each later one kills the run resumed from the one before.
    const moments = [
      { what: 'as the first checkpoint appears', when: () => checkpointEpoch(out) >= 1, minEpoch: () => 1 },
      {
        what: 'while the checkpoint of the second epoch after the resumed one is written',
        // Progress is reported just before the epoch's checkpoint is written: the kill lands in or near that write.
        when: (stderr: string, from: number) => new RegExp(`stage 1 epoch ${from + 2}:`).test(stderr),
        minEpoch: (from: number) => from + 1,
      },
      { what: 'just after a new checkpoint, as the next epoch starts', when: (_: string, from: number) => checkpointEpoch(out) > from, minEpoch: (from: number) => from + 1 },
    ];
    let epoch = 0;
    for (const moment of moments) {
      const from = epoch;
      const killed = await runUntil(from === 0 ? args(out) : resumeArgs(out), (stderr) => moment.when(stderr, from), 'SIGKILL');
      expect(killed.signal, `the run should have been killed ${moment.what}, but it ended: ${killed.stderr}`).toBe('SIGKILL');
      if (from > 0) expect(killed.stderr).toMatch(new RegExp(`resuming after stage 1, epoch ${from}`));
      epoch = await expectWholeAfterKill(out, moment.minEpoch(from));
      console.info(`kill -9 ${moment.what}: checkpoint of stage 1, epoch ${epoch}`);
    }
    expect(epoch).toBeLessThan(epochs); // so the run below resumes rather than finds nothing to do

    const resumed = await runUntil(resumeArgs(out), () => false, 'SIGKILL');
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(new RegExp(`resuming after stage 1, epoch ${epoch}`));
    expect(historyRows(out).map((r) => r[1])).toEqual(Array.from({ length: epochs }, (_, i) => String(i + 1)));
  }, 600_000);
});
