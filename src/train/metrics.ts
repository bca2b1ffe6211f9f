/** Classification metrics computed from predicted probabilities, the way scikit-learn defines them. */

export interface ClassMetrics {
  precision: number;
  recall: number;
  f1: number;
  support: number;
}

export interface ClassificationMetrics {
  samples: number;
  accuracy: number;
  /**
   * 95 % Wilson score interval of the accuracy: with 153 images one image is 0.65 %, so two runs
   * whose intervals overlap widely are not told apart by this set.
   */
  accuracyCI95: [number, number];
  /** Mean cross-entropy of the true class (natural log). */
  loss: number;
  /** Mean recall over the classes that have samples. */
  balancedAccuracy: number;
  perClass: Record<string, ClassMetrics>;
  /** confusion[true][predicted] counts, rows and columns in class order. */
  confusionMatrix: number[][];
  /** Area under the ROC curve of the second class's probability, for two-class problems. */
  rocAuc?: number;
  /**
   * Macro-averaged one-vs-rest ROC AUC (scikit-learn's `roc_auc_score(multi_class='ovr',
   * average='macro')`): the mean over classes present, each against all others. Equals `rocAuc`
   * for two classes.
   */
  rocAucMacro?: number;
}

/**
 * @param probabilities row-major N × K class probabilities
 * @param labels true class index per sample
 */
export function classificationMetrics(
  probabilities: Float32Array,
  labels: ArrayLike<number>,
  classes: readonly string[],
): ClassificationMetrics {
  const k = classes.length;
  const n = labels.length;
  const confusion = classes.map(() => new Array<number>(k).fill(0));
  let loss = 0;
  for (let i = 0; i < n; i++) {
    const row = probabilities.subarray(i * k, (i + 1) * k);
    const predicted = argmax(row);
    confusion[labels[i]!]![predicted]! += 1;
    loss -= Math.log(Math.max(row[labels[i]!]!, 1e-7));
  }
  const perClass: Record<string, ClassMetrics> = {};
  let correct = 0;
  let recallSum = 0;
  let classesWithSupport = 0;
  classes.forEach((name, c) => {
    const tp = confusion[c]![c]!;
    const support = confusion[c]!.reduce((a, b) => a + b, 0);
    const predictedAsC = confusion.reduce((a, row) => a + row[c]!, 0);
    const precision = predictedAsC === 0 ? 0 : tp / predictedAsC;
    const recall = support === 0 ? 0 : tp / support;
    const f1 = precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
    perClass[name] = { precision, recall, f1, support };
    correct += tp;
    if (support > 0) {
      recallSum += recall;
      classesWithSupport += 1;
    }
  });
  const metrics: ClassificationMetrics = {
    samples: n,
    accuracy: n === 0 ? 0 : correct / n,
    accuracyCI95: wilsonInterval(correct, n),
    loss: n === 0 ? 0 : loss / n,
    balancedAccuracy: classesWithSupport === 0 ? 0 : recallSum / classesWithSupport,
    perClass,
    confusionMatrix: confusion,
  };
  if (k === 2) {
    const scores = Array.from({ length: n }, (_, i) => probabilities[i * 2 + 1]!);
    const auc = rocAuc(scores, Array.from(labels, (l) => l === 1));
    if (auc !== undefined) metrics.rocAuc = auc;
  }
  const perClassAuc = classes
    .map((_, c) => rocAuc(Array.from({ length: n }, (_, i) => probabilities[i * k + c]!), Array.from(labels, (l) => l === c)))
    .filter((auc): auc is number => auc !== undefined);
  if (k >= 2 && perClassAuc.length > 0) metrics.rocAucMacro = perClassAuc.reduce((a, b) => a + b, 0) / perClassAuc.length;
  return metrics;
}

/**
 * The 95 % Wilson score interval of a proportion `successes / n` (Wilson 1927): unlike the normal
 * approximation it stays inside [0, 1] and is right for small n and for accuracies near 1.
 */
export function wilsonInterval(successes: number, n: number, z = 1.959963984540054): [number, number] {
  if (n === 0) return [0, 1];
  const p = successes / n;
  const z2 = z * z;
  const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / (1 + z2 / n);
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

/** "0.915, 95 % CI 0.86–0.95, 153 images": an accuracy with its interval, for summaries. */
export function formatAccuracy(metrics: Pick<ClassificationMetrics, 'accuracy' | 'accuracyCI95' | 'samples'>, digits = 3): string {
  const [lo, hi] = metrics.accuracyCI95;
  return `${metrics.accuracy.toFixed(digits)}, 95 % CI ${lo.toFixed(2)}–${hi.toFixed(2)}, ${metrics.samples} images`;
}

export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j]! > row[best]!) best = j;
  return best;
}

/**
 * ROC AUC as the Mann–Whitney statistic: the probability that a random positive scores above a
 * random negative, ties counting half. Undefined when one class is absent.
 */
export function rocAuc(scores: number[], positive: boolean[]): number | undefined {
  const order = scores.map((s, i) => [s, i] as const).sort((a, b) => a[0] - b[0]);
  const ranks = new Array<number>(scores.length);
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j + 1 < order.length && order[j + 1]![0] === order[i]![0]) j++;
    const rank = (i + j) / 2 + 1; // average rank of a tie group, 1-based
    for (let t = i; t <= j; t++) ranks[order[t]![1]] = rank;
    i = j + 1;
  }
  let positives = 0;
  let rankSum = 0;
  positive.forEach((p, i) => {
    if (p) {
      positives += 1;
      rankSum += ranks[i]!;
    }
  });
  const negatives = scores.length - positives;
  if (positives === 0 || negatives === 0) return undefined;
  return (rankSum - (positives * (positives + 1)) / 2) / (positives * negatives);
}
