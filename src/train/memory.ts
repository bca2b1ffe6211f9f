import * as tf from '@tensorflow/tfjs';

/** Messages of the allocation failures of tfjs's backends (WASM heap, WebGPU buffers, TensorFlow, V8). */
const OUT_OF_MEMORY = /out of memory|OOM|Cannot allocate|allocation failed|Array buffer allocation|WebAssembly\.Memory|memory access out of bounds/i;

/** Whether `error` says an allocation failed. */
export function isOutOfMemory(error: unknown): boolean {
  return OUT_OF_MEMORY.test(error instanceof Error ? error.message : String(error));
}

/**
 * The most memory the current backend's tensors can use, when it has a fixed limit: WebAssembly's
 * heap is 32-bit (4 GiB), shared by every tensor, cache and the training step. Undefined for
 * backends bounded only by the device or the machine.
 */
export function backendMemoryLimit(): number | undefined {
  return tf.getBackend() === 'wasm' ? 4 * 1024 ** 3 : undefined;
}

/** Bytes the backend's tensors hold now. */
export function backendBytesInUse(): number {
  return tf.memory().numBytes;
}

/**
 * A rough upper estimate of what one training step over layers (from, to] needs beyond the
 * weights: every layer's output is kept for the backward pass and gets a gradient of its size, and
 * a layer's backward pass briefly holds a few more (×3 in all), for `batch` images; plus the
 * optimizer's two moments of the trainable weights and their gradients.
 */
export function estimateStepBytes(model: tf.LayersModel, from: number, batch: number, trainableParams: number): number {
  let perImage = 0;
  for (let i = from + 1; i < model.layers.length; i++) {
    const shape = model.layers[i]!.outputShape;
    const dims = (Array.isArray(shape[0]) ? shape[0] : shape) as (number | null)[];
    perImage += dims.slice(1).reduce<number>((a, b) => a * (b ?? 1), 1);
  }
  return 3 * 4 * perImage * batch + 3 * 4 * trainableParams;
}

/** Bytes as MiB for messages. */
export function mib(bytes: number): string {
  return `${(bytes / 1024 ** 2).toFixed(0)} MiB`;
}
