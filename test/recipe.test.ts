import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { fineTune, resolveOptions } from '../src/finetune.js';
import { softmaxCrossEntropy } from '../src/train/loss.js';
import { LearningRateSchedule } from '../src/train/schedules.js';
import { Trainer } from '../src/train/trainer.js';
import { UsageError } from '../src/errors.js';
import { needShared, sharedMobileNetWeights, TM_WEIGHTS } from './helpers/shared.js';
import { randomShapesTrainer, shapesFixture, SHAPES_DIR } from './helpers/shapes-fixture.js';

const SIZE = 96;
const shapes = SHAPES_DIR;
const fixture = shapesFixture(SIZE, 'finetune-recipe-');

/** A head-only Trainer on the shapes (random backbone: the schedule does not care about accuracy). */
function headTrainer(options: ConstructorParameters<typeof Trainer>[4]) {
  const { trainer, model } = randomShapesTrainer(fixture, options);
  return { trainer, model };
}

describe('learning-rate schedules (--lr-schedule)', () => {
  const perBatch = async (schedule: LearningRateSchedule) => {
    const rates: number[] = [];
    const { trainer, model } = headTrainer({ callbacks: [schedule, { onBatchEnd: (ctx) => void rates.push(ctx.trainer.learningRate) }] });
    const rows = await trainer.fit(4, 1e-2, 1);
    trainer.dispose();
    model.dispose();
    return { rates, rows };
  };

  it('cosine decays from the stage rate towards 0, after a linear warm-up', async () => {
    const { rates, rows } = await perBatch(new LearningRateSchedule('cosine', { warmupEpochs: 1 }));
    const perEpoch = rates.length / 4;
    expect(rates[0]).toBeCloseTo(1e-2 / 25, 8); // warm-up starts at lr/25
    const peak = rates.indexOf(Math.max(...rates));
    expect(peak).toBeGreaterThanOrEqual(perEpoch - 1); // rising through the warm-up epoch…
    expect(peak).toBeLessThanOrEqual(perEpoch);
    for (let i = peak + 1; i < rates.length; i++) expect(rates[i]!).toBeLessThan(rates[i - 1]!); // …then only falling
    expect(rates.at(-1)!).toBeLessThan(1e-2 * 0.05);
    expect(rows.map((r) => r.lr)[0]).toBeCloseTo(1e-2 / 25, 8); // history.csv records what the epoch used
  });

  it('one-cycle rises to the stage rate, then falls far below it', async () => {
    const { rates } = await perBatch(new LearningRateSchedule('one-cycle'));
    const max = Math.max(...rates);
    expect(rates[0]).toBeCloseTo(1e-2 / 25, 8);
    expect(max).toBeGreaterThan(0.95e-2);
    expect(max).toBeLessThanOrEqual(1e-2 + 1e-12);
    expect(rates.indexOf(max)).toBeLessThan(rates.length / 2);
    expect(rates.at(-1)!).toBeLessThan(1e-2 / 100);
  });

  it('--warmup-epochs without the cosine schedule is a usage error', () => {
    expect(() => resolveOptions({ data: '.', warmupEpochs: 1 })).toThrow(UsageError);
    expect(() => resolveOptions({ data: '.', warmupEpochs: 1, lrSchedule: 'cosine' })).not.toThrow();
    expect(() => resolveOptions({ data: '.', labelSmoothing: 1 })).toThrow(/--label-smoothing/);
  });
});

describe('label smoothing (--label-smoothing)', () => {
  it('is the cross-entropy against 1 − ε on the label and ε/K on every class', () => {
    const logits = tf.tensor2d([[4, 1, -2], [0, 3, 1]]);
    const labels = tf.tensor1d([0, 2], 'int32');
    const logSoftmax = (row: number[]) => {
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
      return row.map((x) => x - lse);
    };
    const expected = (eps: number) =>
      [[4, 1, -2], [0, 3, 1]]
        .map((row, i) => -logSoftmax(row).reduce((a, l, c) => a + ((c === [0, 2][i] ? 1 - eps : 0) + eps / 3) * l, 0))
        .reduce((a, b) => a + b, 0) / 2;
    expect(softmaxCrossEntropy({ labelSmoothing: 0.3 })(logits, labels).dataSync()[0]).toBeCloseTo(expected(0.3), 5);
    expect(softmaxCrossEntropy()(logits, labels).dataSync()[0]).toBeCloseTo(expected(0), 5);
    tf.dispose([logits, labels]);
  });

  it('makes a trained model less confident on the images it labels (through fineTune)', async (ctx) => {
    needShared(ctx, 'label smoothing on confidence (real features)', TM_WEIGHTS);
    const weights = sharedMobileNetWeights()!;
    const confidence = async (labelSmoothing: number) => {
      const result = await fineTune({
        data: shapes, out: path.join(fixture.dir, `ls-${labelSmoothing}`), alpha: 0.35, imageSize: SIZE, weights, epochs: 5,
        fineTuneEpochs: 0, augment: 'none', backend: 'wasm', labelSmoothing,
      });
      expect(result.metrics!.accuracy).toBeGreaterThanOrEqual(0.8);
      return result.predictions.reduce((a, p) => a + p.confidence, 0) / result.predictions.length;
    };
    const [plain, smoothed] = [await confidence(0), await confidence(0.3)];
    expect(smoothed).toBeLessThan(plain - 0.02);
  });
});
