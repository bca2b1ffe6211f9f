/**
 * Softmax cross-entropy (class-weighted, label-smoothed) on the WebGPU backend as one shader forward
 * and one backward. As tfjs ops (oneHot, logSoftmax, a multiply, a sum, a negation, a mean, and
 * their gradients) it cost 19 dispatches in bench/README.md's counted MobileNetV2 step; on a GPU
 * each costs more than this arithmetic (a batch of a few dozen rows of a few classes).
 *
 * The value is mean_i w[label_i] · −Σ_k t_ik · (x_ik − max_i − log Σ_k exp(x_ik − max_i)), with the
 * target t_ik = (1 − ε)·[k = label_i] + ε/K, as src/train/loss.ts computes it with tfjs ops; the
 * gradient w.r.t. the logits is dy · w[label_i] / N · (softmax_ik − t_ik) (Σ_k t_ik = 1). Labels
 * and weights get no gradient.
 */
import * as tf from '@tensorflow/tfjs';
import { installKernel, kernelFunc, registeredKernel, runKernel, runWebGPUProgram, type WebGPUProgram } from './tfjs-internals.js';

const LOSS = 'FinetuneSoftmaxCrossEntropy';
const LOSS_GRAD = 'FinetuneSoftmaxCrossEntropyGrad';
const BACKEND = 'webgpu';

/** Row i's max and log Σ exp(x − max), as WGSL statements defining `rowMax` and `logSum`. */
const ROW_STATS = `
        var rowMax = logits[i * classes];
        for (var k = 1; k < classes; k++) { rowMax = max(rowMax, logits[i * classes + k]); }
        var expSum = 0.0;
        for (var k = 0; k < classes; k++) { expSum += exp(logits[i * classes + k] - rowMax); }
        let logSum = log(expSum);`;

/** The target t_ik as a WGSL expression. */
const TARGET = `select(0.0, 1.0 - uniforms.smoothing, k == i32(labels[i])) + uniforms.smoothing / f32(classes)`;

/** The mean loss in one invocation (N · K is small: a batch of class scores). */
class SoftmaxCrossEntropyProgram implements WebGPUProgram {
  outputShape = [1];
  shaderKey = 'finetuneSoftmaxCrossEntropy';
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number] = [1, 1, 1];
  variableNames = ['logits', 'labels', 'weights'];
  uniforms = 'smoothing : f32,';
  workgroupSize: [number, number, number] = [1, 1, 1];

  getUserCode(): string {
    return `
      fn main(index : i32) {
        if (index != 0) { return; }
        let rows = uniforms.logitsShape[0];
        let classes = uniforms.logitsShape[1];
        var total = 0.0;
        for (var i = 0; i < rows; i++) {${ROW_STATS}
          var rowLoss = 0.0;
          for (var k = 0; k < classes; k++) {
            rowLoss += (${TARGET}) * (logits[i * classes + k] - rowMax - logSum);
          }
          total += weights[i32(labels[i])] * -rowLoss;
        }
        result[0] = total / f32(rows);
      }
    `;
  }
}

/** d loss / d logits, one invocation per logit. */
class SoftmaxCrossEntropyGradProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey = 'finetuneSoftmaxCrossEntropyGrad';
  dispatchLayout = { x: [0, 1] };
  dispatch: [number, number, number];
  variableNames = ['dy', 'logits', 'labels', 'weights'];
  uniforms = 'smoothing : f32,';
  workgroupSize: [number, number, number] = [64, 1, 1];
  size = true;

  constructor(shape: number[]) {
    this.outputShape = shape;
    this.dispatch = [Math.ceil(tf.util.sizeFromShape(shape) / 64), 1, 1];
  }

  getUserCode(): string {
    return `
      fn main(index : i32) {
        if (index >= uniforms.size) { return; }
        let rows = uniforms.logitsShape[0];
        let classes = uniforms.logitsShape[1];
        let i = index / classes;
        let k = index - i * classes;${ROW_STATS}
        let softmax = exp(logits[index] - rowMax - logSum);
        result[index] = dy[0] * weights[i32(labels[i])] / f32(rows) * (softmax - (${TARGET}));
      }
    `;
  }
}

type Args = { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs: tf.NamedAttrMap };

const smoothingUniform = (attrs: tf.NamedAttrMap) => [{ type: 'float32' as const, data: [attrs.smoothing as number] }];

const lossKernel = kernelFunc(({ inputs, backend, attrs }: Args) =>
  runWebGPUProgram(backend, new SoftmaxCrossEntropyProgram(), [inputs.logits!, inputs.labels!, inputs.weights!], 'float32', smoothingUniform(attrs)),
);

const lossGradKernel = kernelFunc(({ inputs, backend, attrs }: Args) =>
  runWebGPUProgram(
    backend,
    new SoftmaxCrossEntropyGradProgram([...inputs.logits!.shape]),
    [inputs.dy!, inputs.logits!, inputs.labels!, inputs.weights!],
    'float32',
    smoothingUniform(attrs),
  ),
);

function register(): void {
  if (registeredKernel(LOSS_GRAD, BACKEND)) return;
  installKernel(LOSS, BACKEND, lossKernel);
  installKernel(LOSS_GRAD, BACKEND, lossGradKernel);
}

/**
 * The mean softmax cross-entropy of `logits` [N, K] against `labels` [N] (int32 class indices),
 * each row weighted by `weights[label]` ([K]), with label smoothing ε; differentiable in the
 * logits. WebGPU only (src/train/loss.ts uses it there).
 */
export function webgpuSoftmaxCrossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D, weights: tf.Tensor1D, labelSmoothing: number): tf.Scalar {
  if (tf.getBackend() !== BACKEND) throw new Error(`webgpuSoftmaxCrossEntropy runs on the webgpu backend only (active: ${tf.getBackend()}).`);
  register();
  const attrs = { smoothing: labelSmoothing };
  const op = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
    // Saved, not captured: the forward pass's tidy disposes what it made (the caller's weights).
    save([x, labels, weights]);
    return {
      value: runKernel(LOSS, { logits: x, labels, weights }, attrs) as tf.Tensor,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [logits, savedLabels, savedWeights] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
        return runKernel(LOSS_GRAD, { dy, logits, labels: savedLabels, weights: savedWeights }, attrs) as tf.Tensor;
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return tf.reshape((op as (x: tf.Tensor) => tf.Tensor)(logits), []) as tf.Scalar;
}
