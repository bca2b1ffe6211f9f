/**
 * Adam on the WebGPU backend in one shader dispatch per few variables (5 where the device binds 16
 * storage buffers per shader stage, as lavapipe's does; 2 at WebGPU's default of 8), where FusedAdam
 * (src/train/optimizer.ts) takes about a dozen over the flat moments plus a slice and an add per
 * variable — 356 dispatches a step for a fully trainable MobileNetV2 (158 variables), 32 here. On a
 * GPU each dispatch costs more than its arithmetic.
 *
 * Both moments live in one flat tensor [m; v] (2 × parameters), owned by the optimizer and updated
 * in place. A dispatch takes a group of variables with their gradients (bound directly: nothing is
 * concatenated), updates their moments at their offsets, and writes each variable's new value to a
 * new tensor it is then assigned (`runRawWebGPUShader`: tfjs's own programs write one tensor).
 * Adam's arithmetic is FusedAdam's, term by term (β1 0.9, β2 0.999, bias corrections from the step
 * count on the host), so the two agree to float rounding, and checkpoints are interchangeable
 * (`getWeights` gives 'iter', 'adam/m', 'adam/v' as FusedAdam).
 *
 * WebGPU only: the constructor throws on another backend (use FusedAdam there).
 */
import * as tf from '@tensorflow/tfjs';
import { installKernel, kernelFunc, makeGPUOutput, maxStorageBuffersPerStage, runKernel, runRawWebGPUShader } from './tfjs-internals.js';

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

const GROUP_KERNEL = 'FinetuneAdamGroup';
const BACKEND = 'webgpu';
const WORKGROUP = 64;
const MAX_WORKGROUPS = 65535;
const ceilDiv = (a: number, b: number): number => Math.ceil(a / b);

/**
 * Variables one dispatch updates, given the storage buffers a shader may bind: each takes three
 * (its value, its gradient, its new value), the moments one.
 */
export function variablesPerDispatch(storageBuffers: number): number {
  return Math.max(1, Math.min(8, Math.floor((storageBuffers - 1) / 3)));
}

/**
 * WGSL updating `slots` variables: slot k's element j (invocation index start_k + j) reads its
 * gradient, updates m and v at moments[offset_k + j] and [total + offset_k + j] in place, and writes
 * the variable's new value (its old one where scale_k is 0: it had no gradient; else the step is scaled by it). The arithmetic is
 * FusedAdam's, term by term.
 */
function groupShaderCode(slots: number): string {
  const names = (p: string) => Array.from({ length: slots }, (_, k) => `${p}${k}`);
  const bindings = [
    '@group(0) @binding(0) var<storage, read_write> moments : array<f32>;',
    ...names('x').map((n, k) => `@group(0) @binding(${1 + k}) var<storage, read> ${n} : array<f32>;`),
    ...names('g').map((n, k) => `@group(0) @binding(${1 + slots + k}) var<storage, read> ${n} : array<f32>;`),
    ...names('out').map((n, k) => `@group(0) @binding(${1 + 2 * slots + k}) var<storage, read_write> ${n} : array<f32>;`),
    `@group(0) @binding(${1 + 3 * slots}) var<uniform> u : Uniforms;`,
  ];
  const lanes = ceilDiv(slots, 4);
  const field = (array: string, k: number) => `u.${array}[${Math.floor(k / 4)}][${k % 4}]`;
  const branches = Array.from(
    { length: slots },
    (_, k) => `if (i < ${field('ends', k)}) {
    let j = i - ${k === 0 ? '0' : field('ends', k - 1)};
    let o = ${field('offsets', k)} + j;
    let gi = g${k}[j];
    let m = moments[o] * u.moment.x + gi * u.moment.y;
    let v = moments[total + o] * u.moment.z + (gi * gi) * u.moment.w;
    moments[o] = m;
    moments[total + o] = v;
    let x = x${k}[j];
    let scale = ${field('scale', k)};
    out${k}[j] = select(x, x + (m * (u.step.x * scale)) / (sqrt(v * u.step.y) + u.step.z), scale != 0.0);
    return;
  }`,
  );
  return `
struct Uniforms {
  moment : vec4<f32>,
  step : vec4<f32>,
  total : vec4<i32>,
  ends : array<vec4<i32>, ${lanes}>,
  offsets : array<vec4<i32>, ${lanes}>,
  scale : array<vec4<f32>, ${lanes}>,
};
${bindings.join('\n')}

@compute @workgroup_size(${WORKGROUP}, 1, 1)
fn main(@builtin(workgroup_id) wg : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>, @builtin(local_invocation_index) li : u32) {
  let i = i32((wg.y * nwg.x + wg.x) * ${WORKGROUP}u + li);
  let total = u.total.x;
  ${branches.join(' else ')}
}
`;
}

/** Four-wide rows of `values` (padded with 0), as the uniform arrays of vec4 want them. */
function rows<T extends 'int32' | 'float32'>(values: number[], type: T): { type: T; data: number[] }[] {
  const out: { type: T; data: number[] }[] = [];
  for (let r = 0; r < values.length; r += 4) {
    const row = values.slice(r, r + 4);
    while (row.length < 4) row.push(0);
    out.push({ type, data: row });
  }
  return out;
}

type Args = { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs: tf.NamedAttrMap };

/**
 * One dispatch: inputs moments, x0…, g0…; outputs the variables' new values; the moments are
 * updated in place. attrs: the Adam constants, `offsets` (each variable's place in the moments) and
 * `scale` (each variable's learning-rate multiplier; 0 where it had no gradient).
 */
const adamGroup = kernelFunc(({ inputs, backend, attrs }: Args) => {
  const offsets = attrs.offsets as number[];
  const scale = attrs.scale as number[];
  const slots = offsets.length;
  const moments = inputs.moments!;
  const xs = offsets.map((_, k) => inputs[`x${k}`]!);
  const gs = offsets.map((_, k) => inputs[`g${k}`]!);
  const outs = xs.map((x) => makeGPUOutput(backend, [...x.shape]));
  const ends: number[] = [];
  let end = 0;
  for (const x of xs) ends.push((end += tf.util.sizeFromShape(x.shape)));
  const workgroups = ceilDiv(end, WORKGROUP);
  const dispatch: [number, number, number] = [Math.min(workgroups, MAX_WORKGROUPS), ceilDiv(workgroups, MAX_WORKGROUPS), 1];
  runRawWebGPUShader(
    backend,
    { key: `finetuneAdamGroup_${slots}`, code: groupShaderCode(slots), dispatch, name: 'FinetuneAdamGroup' },
    [moments, ...xs, ...gs, ...outs],
    [
      { type: 'float32', data: [attrs.beta1 as number, 1 - (attrs.beta1 as number), attrs.beta2 as number, 1 - (attrs.beta2 as number)] },
      { type: 'float32', data: [-(attrs.stepSize as number), attrs.secondCorrection as number, attrs.epsilon as number, 0] },
      { type: 'int32', data: [moments.shape[0]! / 2, 0, 0, 0] },
      ...rows(ends, 'int32'),
      ...rows(offsets, 'int32'),
      ...rows(scale, 'float32'),
    ],
  );
  return outs;
});

/** Registers the kernel for 'webgpu' (idempotent; WebGPUAdam does it). */
export function registerWebgpuAdamKernels(): void {
  installKernel(GROUP_KERNEL, BACKEND, adamGroup);
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
      beta1: this.beta1,
      beta2: this.beta2,
      stepSize: this.learningRate / (1 - this.beta1 ** t),
      secondCorrection: 1 / (1 - this.beta2 ** t),
      epsilon: this.epsilon,
    };
    // Updated in place below: what getWeights exported no longer matches.
    tf.dispose(this.exported ?? []);
    this.exported = undefined;
    this.moments ??= tf.keep(tf.zeros([2 * this.total]) as tf.Tensor1D);
    const perDispatch = variablesPerDispatch(maxStorageBuffersPerStage(tf.backend()));
    tf.tidy(() => {
      for (let first = 0; first < this.variables.length; first += perDispatch) {
        const group = this.variables.slice(first, first + perDispatch);
        const inputs: tf.NamedTensorMap = { moments: this.moments! };
        group.forEach((variable, k) => {
          inputs[`x${k}`] = variable;
          inputs[`g${k}`] = gradients[variable.name] ?? tf.zeros(variable.shape);
        });
        const offsets = group.map((_, k) => this.offsets[first + k]!);
        // 0 where the variable had no gradient (kept as it is), else its learning-rate multiplier.
        const scale = group.map((variable, k) => (gradients[variable.name] ? (this.lrScales?.[first + k] ?? 1) : 0));
        const updated = runKernel(GROUP_KERNEL, inputs, { ...attrs, offsets, scale }) as tf.Tensor[];
        group.forEach((variable, k) => variable.assign(updated[k]!));
      }
    });
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
