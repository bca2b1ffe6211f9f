import { describe, expect, it } from 'vitest';
import { balancedClassWeights } from '../src/train/callbacks.js';
import { classificationMetrics, rocAuc } from '../src/train/metrics.js';

describe('classificationMetrics', () => {
  it('matches hand-computed figures on a 3-class case', () => {
    // true:      0  0  0  1  1  2
    // predicted: 0  0  1  1  2  2
    const probs = new Float32Array([
      0.8, 0.1, 0.1,
      0.6, 0.3, 0.1,
      0.2, 0.7, 0.1,
      0.1, 0.8, 0.1,
      0.1, 0.3, 0.6,
      0.2, 0.2, 0.6,
    ]);
    const m = classificationMetrics(probs, [0, 0, 0, 1, 1, 2], ['a', 'b', 'c']);
    expect(m.accuracy).toBeCloseTo(4 / 6, 10);
    expect(m.confusionMatrix).toEqual([
      [2, 1, 0],
      [0, 1, 1],
      [0, 0, 1],
    ]);
    expect(m.perClass.a).toEqual({ precision: 1, recall: 2 / 3, f1: 0.8, support: 3 });
    expect(m.perClass.b!.precision).toBeCloseTo(0.5, 10);
    expect(m.perClass.b!.recall).toBeCloseTo(0.5, 10);
    expect(m.perClass.c!.precision).toBeCloseTo(0.5, 10);
    expect(m.perClass.c!.recall).toBe(1);
    expect(m.balancedAccuracy).toBeCloseTo((2 / 3 + 0.5 + 1) / 3, 10);
    const expectedLoss = -(Math.log(0.8) + Math.log(0.6) + Math.log(0.2) + Math.log(0.8) + Math.log(0.3) + Math.log(0.6)) / 6;
    expect(m.loss).toBeCloseTo(expectedLoss, 5);
    expect(m.rocAuc).toBeUndefined();
  });

  it('gives ROC AUC for two classes', () => {
    const probs = new Float32Array([0.9, 0.1, 0.6, 0.4, 0.3, 0.7, 0.55, 0.45]);
    const m = classificationMetrics(probs, [0, 0, 1, 1], ['neg', 'pos']);
    // positives score 0.7, 0.45; negatives 0.1, 0.4 → pairs won: (0.7>0.1, 0.7>0.4, 0.45>0.1, 0.45>0.4) = 4/4
    expect(m.rocAuc).toBe(1);
  });
});

describe('rocAuc', () => {
  it('counts ties as half and is undefined with one class', () => {
    expect(rocAuc([0.5, 0.5], [true, false])).toBe(0.5);
    expect(rocAuc([0.1, 0.4, 0.35, 0.8], [false, false, true, true])).toBe(0.75);
    expect(rocAuc([0.1, 0.2], [true, true])).toBeUndefined();
  });
});

describe('balancedClassWeights', () => {
  it('weights rare classes up like scikit-learn', () => {
    expect(balancedClassWeights([0, 0, 0, 1], 2)).toEqual([4 / 6, 2]);
  });
});
