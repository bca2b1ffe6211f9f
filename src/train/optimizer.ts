/**
 * Adam over all of a model's trainable variables at once.
 *
 * tfjs' own Adam issues about a dozen small ops per variable per step (1,900 for a fully trainable
 * MobileNetV2); on a GPU each op costs far more to dispatch than to compute, and the optimizer
 * dominated the step. This one keeps both moments as one flat vector: a step is one concat of the
 * gradients, a dozen ops on the flat vectors, one slice and one add per variable. The arithmetic is
 * Adam's (Kingma & Ba, with tfjs' defaults β1 0.9, β2 0.999), so results match `tf.train.adam`
 * to float rounding; the bias corrections are computed on the host from the step count.
 */
import * as tf from '@tensorflow/tfjs';
import type { NamedTensor } from './types.js';

export interface AdamOptions {
  beta1?: number;
  beta2?: number;
  /** Added to the denominator; tfjs' default is the backend's epsilon (1e-7 in float32). */
  epsilon?: number;
  /** Per-variable multipliers of the learning rate, in `variables` order (default: all 1). */
  lrScales?: number[];
}

export class FusedAdam {
  learningRate: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  private readonly variables: tf.Variable[];
  private readonly sizes: number[];
  private readonly total: number;
  private readonly lrScales: number[] | undefined;
  private steps = 0;
  private m: tf.Tensor1D | undefined;
  private v: tf.Tensor1D | undefined;

  /** `variables` fixes the layout of the flat moments; gradients are looked up by their names. */
  constructor(variables: tf.Variable[], learningRate: number, options: AdamOptions = {}) {
    this.variables = variables;
    this.learningRate = learningRate;
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.epsilon = options.epsilon ?? tf.backend().epsilon();
    this.sizes = variables.map((v) => v.size);
    this.total = this.sizes.reduce((a, b) => a + b, 0);
    if (options.lrScales && options.lrScales.length !== variables.length) {
      throw new Error(`FusedAdam: ${options.lrScales.length} learning-rate scales for ${variables.length} variables`);
    }
    this.lrScales = options.lrScales;
  }

  /** Steps taken so far. */
  get iterations(): number {
    return this.steps;
  }

  /** One Adam step; `gradients` maps variable names to gradients (as `tf.variableGrads` gives them). */
  applyGradients(gradients: tf.NamedTensorMap): void {
    if (this.variables.length === 0) return;
    const t = this.steps + 1;
    const stepSize = this.learningRate / (1 - this.beta1 ** t);
    const secondCorrection = 1 / (1 - this.beta2 ** t);
    const [m, v] = tf.tidy(() => {
      const g = tf.concat(
        this.variables.map((variable) => {
          const gradient = gradients[variable.name];
          return gradient ? tf.reshape(gradient, [-1]) : tf.zeros([variable.size]);
        }),
      ) as tf.Tensor1D;
      const m = tf.add(tf.mul(this.m ?? tf.zerosLike(g), this.beta1), tf.mul(g, 1 - this.beta1)) as tf.Tensor1D;
      const v = tf.add(tf.mul(this.v ?? tf.zerosLike(g), this.beta2), tf.mul(tf.square(g), 1 - this.beta2)) as tf.Tensor1D;
      // -lr · m̂ / (√v̂ + ε), with m̂ = m / (1 - β1ᵗ) and v̂ = v / (1 - β2ᵗ).
      const update = tf.div(tf.mul(m, -stepSize), tf.add(tf.sqrt(tf.mul(v, secondCorrection)), this.epsilon));
      const pieces = this.variables.length === 1 ? [update] : tf.split(update, this.sizes);
      this.variables.forEach((variable, i) => {
        if (!gradients[variable.name]) return;
        // A scale of 1 adds no op, so one learning rate stays bit-identical to plain Adam.
        const scale = this.lrScales?.[i] ?? 1;
        const piece = scale === 1 ? pieces[i]! : tf.mul(pieces[i]!, scale);
        variable.assign(tf.add(variable, tf.reshape(piece, variable.shape)));
      });
      return [m, v];
    });
    tf.dispose([this.m, this.v]);
    // Kept: a step may run inside the caller's tidy(), and the moments outlive it.
    this.m = tf.keep(m);
    this.v = tf.keep(v);
    this.steps = t;
  }

  /**
   * The step count (a new int32 scalar the caller disposes) and the moments (the optimizer's own:
   * don't dispose), for checkpoints. Before the first step there are no moments.
   */
  async getWeights(): Promise<NamedTensor[]> {
    const weights: NamedTensor[] = [{ name: 'iter', tensor: tf.scalar(this.steps, 'int32') }];
    if (this.m && this.v) weights.push({ name: 'adam/m', tensor: this.m }, { name: 'adam/v', tensor: this.v });
    return weights;
  }

  /**
   * Takes back what `getWeights` gave (copies are made; the caller still owns its tensors). Also
   * accepts tfjs Adam's per-variable layout (step count, every m, every v) in this optimizer's
   * variable order.
   */
  async setWeights(weights: NamedTensor[]): Promise<void> {
    const [iter, ...slots] = weights;
    if (!iter) throw new Error('FusedAdam.setWeights: no step count');
    this.steps = (await iter.tensor.data())[0]!;
    tf.dispose([this.m, this.v]);
    this.m = this.v = undefined;
    if (slots.length === 0) return;
    const flat = (parts: NamedTensor[]) => tf.tidy(() => tf.concat(parts.map((p) => tf.reshape(p.tensor, [-1]))) as tf.Tensor1D);
    const half = slots.length / 2;
    const [m, v] = [flat(slots.slice(0, half)), flat(slots.slice(half))];
    if (m.size !== this.total || v.size !== this.total) {
      tf.dispose([m, v]);
      throw new Error(`FusedAdam.setWeights: the saved moments hold ${m.size} values, this optimizer's variables ${this.total}`);
    }
    this.m = tf.keep(m);
    this.v = tf.keep(v);
  }

  dispose(): void {
    tf.dispose([this.m, this.v]);
    this.m = this.v = undefined;
  }
}
