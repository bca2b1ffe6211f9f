/**
 * Milliseconds per call of the WASM convolution gradient kernels at MobileNetV2 / VGG16 shapes,
 * next to the forward convolution for scale (and the backend's native Conv2DBackpropInput).
 *
 *   npx vite-node bench/wasm-kernels.ts [batch=16]
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { registerWasmTrainingKernels } from '../src/engine/wasm-kernels.js';

type Shape4 = [number, number, number, number];

const batch = Number(process.argv[2] ?? 16);

/** Median ms of `reps` calls (after one warm-up call). */
function time(run: () => tf.Tensor, reps = 3): number {
  const once = (): number => {
    const t0 = performance.now();
    const out = run();
    out.dataSync();
    const ms = performance.now() - t0;
    out.dispose();
    return ms;
  };
  once();
  const ms = Array.from({ length: reps }, once).sort((a, b) => a - b);
  return ms[Math.floor(reps / 2)]!;
}

interface Layer {
  name: string;
  x: Shape4;
  filter: Shape4;
  strides: number;
  depthwise: boolean;
}

const layers: Layer[] = [
  { name: 'MobileNetV2 expand 1×1 96→576 @14', x: [batch, 14, 14, 96], filter: [1, 1, 96, 576], strides: 1, depthwise: false },
  { name: 'MobileNetV2 depthwise 3×3 576 @14', x: [batch, 14, 14, 576], filter: [3, 3, 576, 1], strides: 1, depthwise: true },
  { name: 'MobileNetV2 depthwise 3×3/2 576 @14', x: [batch, 14, 14, 576], filter: [3, 3, 576, 1], strides: 2, depthwise: true },
  { name: 'MobileNetV2 project 1×1 576→96 @14', x: [batch, 14, 14, 576], filter: [1, 1, 576, 96], strides: 1, depthwise: false },
  { name: 'MobileNetV2 depthwise 3×3 960 @7', x: [batch, 7, 7, 960], filter: [3, 3, 960, 1], strides: 1, depthwise: true },
  { name: 'MobileNetV2 project 1×1 960→160 @7', x: [batch, 7, 7, 960], filter: [1, 1, 960, 160], strides: 1, depthwise: false },
  { name: 'MobileNetV2 Conv_1 1×1 320→1280 @7', x: [batch, 7, 7, 320], filter: [1, 1, 320, 1280], strides: 1, depthwise: false },
  { name: 'VGG16 block5 3×3 512→512 @14', x: [batch, 14, 14, 512], filter: [3, 3, 512, 512], strides: 1, depthwise: false },
];

async function main(): Promise<void> {
  await tf.setBackend('wasm');
  await tf.ready();
  const nativeInput = tf.getKernel(tf.Conv2DBackpropInput, 'wasm')!.kernelFunc;
  registerWasmTrainingKernels();

  console.log(`batch ${batch}, ms per call (median of 3)`);
  for (const l of layers) {
    const x = tf.randomNormal(l.x) as tf.Tensor4D;
    const w = tf.randomNormal(l.filter) as tf.Tensor4D;
    const fwd = l.depthwise ? tf.depthwiseConv2d(x, w, l.strides, 'same') : tf.conv2d(x, w, l.strides, 'same');
    const dy = tf.randomNormal(fwd.shape) as tf.Tensor4D;
    fwd.dispose();
    const common = { strides: l.strides, pad: 'same' as const };
    const row: Record<string, string> = {};
    row.forward = time(() => (l.depthwise ? tf.depthwiseConv2d(x, w, l.strides, 'same') : tf.conv2d(x, w, l.strides, 'same'))).toFixed(1);
    if (l.depthwise) {
      const attrs = { ...common, dilations: 1 };
      row.backpropFilter = time(() => tf.engine().runKernel(tf.DepthwiseConv2dNativeBackpropFilter, { x, dy }, { ...attrs, filterShape: l.filter }) as tf.Tensor).toFixed(1);
      row.backpropInput = time(() => tf.engine().runKernel(tf.DepthwiseConv2dNativeBackpropInput, { dy, filter: w }, { ...attrs, inputShape: l.x }) as tf.Tensor).toFixed(1);
    } else {
      const attrs = { ...common, dataFormat: 'NHWC' };
      row.backpropFilter = time(() => tf.engine().runKernel(tf.Conv2DBackpropFilter, { x, dy }, { ...attrs, filterShape: l.filter }) as tf.Tensor).toFixed(1);
      row.backpropInput = time(() => tf.engine().runKernel(tf.Conv2DBackpropInput, { dy, filter: w }, { ...attrs, inputShape: l.x }) as tf.Tensor).toFixed(1);
      // The backend's own C++ kernel, which registerWasmTrainingKernels replaces.
      tf.unregisterKernel(tf.Conv2DBackpropInput, 'wasm');
      tf.registerKernel({ kernelName: tf.Conv2DBackpropInput, backendName: 'wasm', kernelFunc: nativeInput });
      row.nativeBackpropInput = time(() => tf.engine().runKernel(tf.Conv2DBackpropInput, { dy, filter: w }, { ...attrs, inputShape: l.x }) as tf.Tensor, 1).toFixed(1);
      registerWasmTrainingKernels();
    }
    console.log(`${l.name.padEnd(40)} ${Object.entries(row).map(([k, v]) => `${k} ${v}`).join('  ')}`);
    tf.dispose([x, w, dy]);
  }
}

await main();
