import { describe, expect, it } from 'vitest';
import { balancedClassWeights } from '../src/train/callbacks.js';
import { classificationMetrics, formatAccuracy, rocAuc, wilsonInterval } from '../src/train/metrics.js';

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

describe('intervals and multi-class AUC', () => {
  it('every accuracy carries its 95 % Wilson interval', () => {
    // The example: 140 of 153 validation images right.
    const [lo, hi] = wilsonInterval(140, 153);
    expect(lo).toBeCloseTo(0.86006, 4);
    expect(hi).toBeCloseTo(0.94967, 4);
    expect(wilsonInterval(10, 10)[1]).toBeCloseTo(1, 10); // never past 1
    expect(wilsonInterval(0, 5)[0]).toBe(0);
    const probabilities = new Float32Array([0.9, 0.1, 0.2, 0.8, 0.6, 0.4]);
    const m = classificationMetrics(probabilities, [0, 1, 1], ['a', 'b']);
    expect(m.accuracyCI95).toEqual(wilsonInterval(2, 3));
    expect(formatAccuracy({ accuracy: 140 / 153, accuracyCI95: wilsonInterval(140, 153), samples: 153 })).toBe('0.915, 95 % CI 0.86–0.95, 153 images');
  });

  it('macro one-vs-rest ROC AUC for more than two classes (scikit-learn multi_class="ovr")', () => {
    const probabilities = new Float32Array([0.8, 0.1, 0.1, 0.1, 0.8, 0.1, 0.3, 0.3, 0.4, 0.45, 0.5, 0.05]);
    const m = classificationMetrics(probabilities, [0, 1, 2, 2], ['a', 'b', 'c']);
    expect(m.rocAuc).toBeUndefined();
    expect(m.rocAucMacro).toBeCloseTo((1 + 1 + 0.5) / 3, 10);
    const binary = classificationMetrics(new Float32Array([0.9, 0.1, 0.2, 0.8, 0.6, 0.4]), [0, 1, 1], ['a', 'b']);
    expect(binary.rocAucMacro).toBeCloseTo(binary.rocAuc!, 10);
  });
});
