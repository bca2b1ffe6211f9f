/**
 * Adam on the WebGPU backend in 2 + (variables) shader dispatches a step (plus tfjs's concat of the
 * gradients: one dispatch per 7 of them), where FusedAdam (src/train/optimizer.ts) takes about a
 * dozen over the flat moments plus a slice and an add per variable — 356 dispatches a step for a
 * fully trainable MobileNetV2, 187 here. On a GPU each dispatch costs more than its arithmetic.
 *
 * Both moments live in one flat tensor [m; v] (2 × parameters). A step is: the gradients
 * concatenated, one shader for the new moments, and per variable one shader computing its new
 * value from the moments at its offset. Adam's arithmetic is FusedAdam's, term by term (β1 0.9,
 * β2 0.999, bias corrections from the step count on the host), so the two agree to float rounding,
 * and checkpoints are interchangeable (`getWeights` gives 'iter', 'adam/m', 'adam/v' as FusedAdam).
 *
 * WebGPU only: the constructor throws on another backend (use FusedAdam there).
 */
import * as tf from '@tensorflow/tfjs';
import {
  installKernel, kernelFunc, runKernel, runWebGPUProgram, type TensorInfo, type WebGPUProgram,
} from './tfjs-internals.js';

/** What a checkpoint stores of an optimizer (the Trainer's NamedTensor). */
export interface NamedOptimizerTensor {
  name: string;
  tensor: tf.Tensor;
}

export interface WebGPUAdamOptions {
  beta1?: number;
  beta2?: number;
  /** Added to the denominator; default the backend's epsilon, as FusedAdam. */
  epsilon?: number;
  /** Per-variable multipliers of the learning rate, in `variables` order (default: all 1). */
  lrScales?: number[];
}

const MOMENTS_KERNEL = 'FinetuneAdamMoments';
const APPLY_KERNEL = 'FinetuneAdamApply';
const BACKEND = 'webgpu';
const ceilDiv = (a: number, b: number): number => Math.ceil(a / b);

/** New [m; v] from the old ones and the flat gradient: m' = β1·m + (1−β1)·g, v' = β2·v + (1−β2)·g². */
class AdamMomentsProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey = 'finetuneAdamMoments';
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  variableNames = ['moments', 'g'];
  uniforms = 'beta1 : f32, oneMinusBeta1 : f32, beta2 : f32, oneMinusBeta2 : f32, total : i32,';
  workgroupSize: [number, number, number] = [64, 1, 1];
  size = true;

  constructor(total: number) {
    this.outputShape = [2 * total];
    this.dispatch = [ceilDiv(2 * total, 64), 1, 1];
  }

  getUserCode(): string {
    return `
      fn main(index : i32) {
        if (index < uniforms.size) {
          if (index < uniforms.total) {
            result[index] = moments[index] * uniforms.beta1 + g[index] * uniforms.oneMinusBeta1;
          } else {
            let gi = g[index - uniforms.total];
            result[index] = moments[index] * uniforms.beta2 + (gi * gi) * uniforms.oneMinusBeta2;
          }
        }
      }
    `;
  }
}

/** A variable's new value: x + (m · −stepSize) / (√(v · secondCorrection) + ε), its m and v at `offset`. */
class AdamApplyProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey = 'finetuneAdamApply';
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  variableNames = ['x', 'moments'];
  uniforms = 'negStepSize : f32, secondCorrection : f32, epsilon : f32, offset : i32, total : i32,';
  workgroupSize: [number, number, number] = [64, 1, 1];
  size = true;

  constructor(shape: number[]) {
    this.outputShape = shape;
    this.dispatchLayout = { x: shape.map((_, i) => i) };
    this.dispatch = [ceilDiv(tf.util.sizeFromShape(shape), 64), 1, 1];
  }

  getUserCode(): string {
    return `
      fn main(index : i32) {
        if (index < uniforms.size) {
          let m = moments[uniforms.offset + index];
          let v = moments[uniforms.total + uniforms.offset + index];
          result[index] = x[index] + (m * uniforms.negStepSize) / (sqrt(v * uniforms.secondCorrection) + uniforms.epsilon);
        }
      }
    `;
  }
}

type Args = { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs: tf.NamedAttrMap };

const adamMoments = kernelFunc(({ inputs, backend, attrs }: Args) => {
  const { moments, g } = inputs as { moments: TensorInfo; g: TensorInfo };
  const beta1 = attrs.beta1 as number;
  const beta2 = attrs.beta2 as number;
  const total = g.shape[0]!;
  return runWebGPUProgram(backend, new AdamMomentsProgram(total), [moments, g], 'float32', [
    { type: 'float32', data: [beta1] },
    { type: 'float32', data: [1 - beta1] },
    { type: 'float32', data: [beta2] },
    { type: 'float32', data: [1 - beta2] },
    { type: 'int32', data: [total] },
  ]);
});

const adamApply = kernelFunc(({ inputs, backend, attrs }: Args) => {
  const { x, moments } = inputs as { x: TensorInfo; moments: TensorInfo };
  return runWebGPUProgram(backend, new AdamApplyProgram([...x.shape]), [x, moments], 'float32', [
    { type: 'float32', data: [-(attrs.stepSize as number)] },
    { type: 'float32', data: [attrs.secondCorrection as number] },
    { type: 'float32', data: [attrs.epsilon as number] },
    { type: 'int32', data: [attrs.offset as number] },
    { type: 'int32', data: [moments.shape[0]! / 2] },
  ]);
});

/** Registers the two kernels for 'webgpu' (idempotent; WebGPUAdam does it). */
export function registerWebgpuAdamKernels(): void {
  installKernel(MOMENTS_KERNEL, BACKEND, adamMoments);
  installKernel(APPLY_KERNEL, BACKEND, adamApply);
}

export class WebGPUAdam {
  learningRate: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  private readonly variables: tf.Variable[];
  private readonly offsets: number[];
  private readonly total: number;
  private readonly lrScales: number[] | undefined;
  private steps = 0;
  /** [m; v]: 2 × total values. */
  private moments: tf.Tensor1D | undefined;
  /** m and v as separate tensors, made for getWeights and kept until the moments change. */
  private exported: [tf.Tensor1D, tf.Tensor1D] | undefined;

  /** `variables` fixes the layout of the flat moments; gradients are looked up by their names. */
  constructor(variables: tf.Variable[], learningRate: number, options: WebGPUAdamOptions = {}) {
    if (tf.getBackend() !== BACKEND) {
      throw new Error(`WebGPUAdam runs on the webgpu backend only (active: ${tf.getBackend()}); use FusedAdam there.`);
    }
    registerWebgpuAdamKernels();
    this.variables = variables;
    this.learningRate = learningRate;
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.epsilon = options.epsilon ?? tf.backend().epsilon();
    this.offsets = [];
    let offset = 0;
    for (const v of variables) {
      this.offsets.push(offset);
      offset += v.size;
    }
    this.total = offset;
    if (options.lrScales && options.lrScales.length !== variables.length) {
      throw new Error(`WebGPUAdam: ${options.lrScales.length} learning-rate scales for ${variables.length} variables`);
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
    const attrs = {
      stepSize: this.learningRate / (1 - this.beta1 ** t),
      secondCorrection: 1 / (1 - this.beta2 ** t),
      epsilon: this.epsilon,
    };
    const moments = tf.tidy(() => {
      const g = tf.concat(
        this.variables.map((variable) => {
          const gradient = gradients[variable.name];
          return gradient ? tf.reshape(gradient, [-1]) : tf.zeros([variable.size]);
        }),
      );
      const previous = this.moments ?? tf.zeros([2 * this.total]);
      const next = runKernel(MOMENTS_KERNEL, { moments: previous, g }, { beta1: this.beta1, beta2: this.beta2 }) as tf.Tensor1D;
      this.variables.forEach((variable, i) => {
        if (!gradients[variable.name]) return;
        // The per-variable rate is a uniform of its own dispatch: no extra work for discriminative rates.
        const stepSize = attrs.stepSize * (this.lrScales?.[i] ?? 1);
        variable.assign(runKernel(APPLY_KERNEL, { x: variable, moments: next }, { ...attrs, stepSize, offset: this.offsets[i]! }) as tf.Tensor);
      });
      return next;
    });
    this.replaceMoments(moments);
    this.steps = t;
  }

  /**
   * The step count (a new int32 scalar the caller disposes) and the moments (the optimizer's own:
   * don't dispose), for checkpoints, as FusedAdam gives them. Before the first step there are none.
   */
  async getWeights(): Promise<NamedOptimizerTensor[]> {
    const weights: NamedOptimizerTensor[] = [{ name: 'iter', tensor: tf.scalar(this.steps, 'int32') }];
    if (this.moments) {
      this.exported ??= tf.tidy(() => tf.split(this.moments!, 2) as [tf.Tensor1D, tf.Tensor1D]);
      weights.push({ name: 'adam/m', tensor: this.exported[0] }, { name: 'adam/v', tensor: this.exported[1] });
    }
    return weights;
  }

  /**
   * Takes back what `getWeights` gave (copies are made; the caller still owns its tensors), or
   * FusedAdam's, or tfjs Adam's per-variable layout (step count, every m, every v) in this
   * optimizer's variable order.
   */
  async setWeights(weights: NamedOptimizerTensor[]): Promise<void> {
    const [iter, ...slots] = weights;
    if (!iter) throw new Error('WebGPUAdam.setWeights: no step count');
    this.steps = (await iter.tensor.data())[0]!;
    this.replaceMoments(undefined);
    if (slots.length === 0) return;
    const moments = tf.tidy(() => tf.concat(slots.map((s) => tf.reshape(s.tensor, [-1]))) as tf.Tensor1D);
    if (moments.size !== 2 * this.total) {
      moments.dispose();
      throw new Error(`WebGPUAdam.setWeights: the saved moments hold ${moments.size / 2} values, this optimizer's variables ${this.total}`);
    }
    this.replaceMoments(moments);
  }

  dispose(): void {
    this.replaceMoments(undefined);
  }

  private replaceMoments(moments: tf.Tensor1D | undefined): void {
    tf.dispose([this.moments, ...(this.exported ?? [])]);
    this.exported = undefined;
    // Kept: a step may run inside the caller's tidy(), and the moments outlive it.
    this.moments = moments ? tf.keep(moments) : undefined;
  }
}

/** An OptimizerFactory (TrainerOptions.optimizer) for WebGPUAdam. */
export const webgpuAdam = (variables: tf.Variable[], learningRate: number, lrScales?: number[]): WebGPUAdam =>
  new WebGPUAdam(variables, learningRate, { lrScales });
