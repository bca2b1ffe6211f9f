/**
 * finetune's SIMD kernels (src/engine/simd): the shipped binaries are kernels.wat assembled, and
 * both (shared and plain memory) compute what a plain loop computes.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GENERATED_FILE, assembleKernels, generatedSource } from '../src/engine/simd/assemble.js';
import { PLAIN_MEMORY_KERNELS, SHARED_MEMORY_KERNELS } from '../src/engine/simd/kernels.generated.js';
import type { SimdKernels } from '../src/engine/simd/kernels.js';
import { randoms } from './helpers/kernel-check.js';

/** The WebAssembly API as used here (this project's lib has no WebAssembly types). */
const WA = (globalThis as unknown as {
  WebAssembly: {
    Memory: new (d: { initial: number; maximum: number; shared: boolean }) => { buffer: ArrayBuffer };
    Module: new (bytes: Uint8Array) => object;
    Instance: new (module: object, imports: object) => { exports: object };
  };
}).WebAssembly;

describe('SIMD kernels', () => {
  it('kernels.generated.ts is kernels.wat assembled (run `npm run build:simd` after editing the .wat)', async () => {
    expect(readFileSync(GENERATED_FILE, 'utf8')).toBe(generatedSource(await assembleKernels()));
  });

  for (const shared of [true, false]) {
    const variant = shared ? 'shared-memory' : 'plain-memory';
    const load = () => {
      const memory = new WA.Memory({ initial: 64, maximum: 65536, shared });
      const module = new WA.Module(Buffer.from(shared ? SHARED_MEMORY_KERNELS : PLAIN_MEMORY_KERNELS, 'base64'));
      const kernels = new WA.Instance(module, { env: { memory } }).exports as unknown as SimdKernels;
      return {
        kernels,
        f32: (byteOffset: number, length: number) => new Float32Array(memory.buffer, byteOffset, length),
        f64: (byteOffset: number, length: number) => new Float64Array(memory.buffer, byteOffset, length),
      };
    };

    it(`${variant} sumRows adds each column's rows in order, in float32, and scales`, () => {
      const { kernels, f32 } = load();
      for (const [rows, cols, scale] of [[800, 1280, 1], [25, 7, 1 / 25], [3, 1, 1], [0, 5, 1], [9, 0, 1]] as const) {
        const src = f32(64, rows * cols);
        src.set(randoms(rows * cols, rows + cols));
        const dstOffset = 64 + 4 * rows * cols + 4 * 3; // deliberately not 16-byte aligned
        f32(dstOffset, cols).fill(Number.NaN); // must be overwritten
        kernels.sumRows(64, rows, cols, dstOffset, scale);
        const expected = new Float32Array(cols);
        for (let c = 0; c < cols; c++) {
          let acc = 0;
          for (let r = 0; r < rows; r++) acc = Math.fround(acc + src[r * cols + c]!);
          expected[c] = scale === 1 ? acc : Math.fround(acc * Math.fround(scale));
        }
        expect(Array.from(f32(dstOffset, cols))).toEqual(Array.from(expected));
      }
    });

    it(`${variant} relu6Grad passes dy where 0 ≤ x ≤ 6 (edges included), else 0`, () => {
      const { kernels, f32 } = load();
      const edges = [-1, -0, 0, 3, 6, 6.000001, 7, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY];
      const n = 1003; // not a multiple of 4: the scalar tail runs too
      const x = f32(0, n);
      const dy = f32(4 * n, n);
      x.set(randoms(n, 1).map((v) => v * 8 - 1));
      x.set(edges);
      dy.set(randoms(n, 2));
      kernels.relu6Grad(4 * n, 0, 8 * n, n);
      const expected = Array.from(x, (v, i) => (v >= 0 && v <= 6 ? dy[i]! : 0));
      expect(Array.from(f32(8 * n, n))).toEqual(expected);
    });

    it(`${variant} matMulTransposeA equals a float32 loop over p, for every tile tail`, () => {
      const { kernels, f32 } = load();
      // m and n around the 4 × 8 tile (and its 4 × 4, 4 × 1, 1 × 8, 1 × 4, 1 × 1 tails), p = 0 too;
      // strides wider than the matrices, offsets not 16-byte aligned; overwrite, then accumulate.
      let seed = 10;
      for (const m of [1, 3, 4, 5, 8, 11]) {
        for (const n of [1, 3, 4, 7, 8, 13, 20]) {
          for (const p of [0, 1, 6]) {
            const [aStride, bStride, outStride] = [m + 2, n + 1, n + 3];
            const aOffset = 4;
            const bOffset = aOffset + 4 * (p * aStride + 5);
            const outOffset = bOffset + 4 * (p * bStride + 7);
            const outLength = m * outStride;
            const a = f32(aOffset, p * aStride);
            const b = f32(bOffset, p * bStride);
            const out = f32(outOffset, outLength + 1); // + 1: nothing is written past the end
            a.set(randoms(a.length, seed++));
            b.set(randoms(b.length, seed++));
            out.set(randoms(out.length, seed++));
            for (const accumulate of [0, 1]) {
              const expected = Float32Array.from(out);
              for (let i = 0; i < m; i++) {
                for (let j = 0; j < n; j++) {
                  let acc = accumulate ? expected[i * outStride + j]! : 0;
                  for (let q = 0; q < p; q++) acc = Math.fround(acc + Math.fround(a[q * aStride + i]! * b[q * bStride + j]!));
                  expected[i * outStride + j] = acc;
                }
              }
              kernels.matMulTransposeA(aOffset, aStride, bOffset, bStride, outOffset, outStride, m, n, p, accumulate);
              expect(Array.from(out), `m ${m} n ${n} p ${p} accumulate ${accumulate}`).toEqual(Array.from(expected));
            }
          }
        }
      }
    });

    it(`${variant} matMulTransposeA over p split into calls (accumulate) is the same sum`, () => {
      const { kernels, f32 } = load();
      const [m, n, p] = [9, 37, 200];
      const a = f32(0, p * m);
      const b = f32(4 * p * m, p * n);
      a.set(randoms(a.length, 40));
      b.set(randoms(b.length, 41));
      const whole = 4 * p * (m + n);
      const split = whole + 4 * m * n;
      kernels.matMulTransposeA(0, m, 4 * p * m, n, whole, n, m, n, p, 0);
      for (const [q0, q1] of [[0, 3], [3, 100], [100, 101], [101, 200]] as const) {
        kernels.matMulTransposeA(4 * q0 * m, m, 4 * p * m + 4 * q0 * n, n, split, n, m, n, q1 - q0, q0 > 0 ? 1 : 0);
      }
      expect(Array.from(f32(split, m * n))).toEqual(Array.from(f32(whole, m * n)));
    });

    // A row of a depthwise convolution: output width 6 over input width 11 or 12, 3 taps, stride 2
    // or 1, padding 1 on the left; odd and even channel counts (the kernels do 2 at a time).
    for (const [channels, stride, width] of [[5, 2, 11], [8, 1, 12]] as const) {
      const outWidth = 6;
      const left = 1;
      const taps = 3;
      const columns = (visit: (xo: number, fx: number, ix: number) => void) => {
        for (let xo = 0; xo < outWidth; xo++) {
          for (let fx = 0; fx < taps; fx++) {
            const ix = xo * stride - left + fx;
            if (ix >= 0 && ix < width) visit(xo, fx, ix);
          }
        }
      };

      it(`${variant} depthwiseFilterRow (C ${channels}, stride ${stride}) adds float64 products in a loop's order`, () => {
        const { kernels, f32, f64 } = load();
        const x = f32(0, width * channels);
        const dy = f32(4096, outWidth * channels);
        x.set(randoms(x.length, 3));
        dy.set(randoms(dy.length, 4));
        const acc = f64(8192, taps * channels);
        acc.set(randoms(acc.length, 5)); // it accumulates onto what is there
        const expected = Float64Array.from(acc);
        columns((xo, fx, ix) => {
          for (let k = 0; k < channels; k++) expected[fx * channels + k] += x[ix * channels + k]! * dy[xo * channels + k]!;
        });
        kernels.depthwiseFilterRow(0, 4096, 8192, outWidth, width, channels, stride, left, taps);
        expect(Array.from(acc)).toEqual(Array.from(expected));
      });

      it(`${variant} depthwiseInputRow (C ${channels}, stride ${stride}) equals a Float32Array loop`, () => {
        const { kernels, f32 } = load();
        const dx = f32(0, width * channels);
        const dy = f32(4096, outWidth * channels);
        const filter = f32(8192, taps * channels);
        dx.set(randoms(dx.length, 6));
        dy.set(randoms(dy.length, 7));
        filter.set(randoms(filter.length, 8));
        const expected = Float32Array.from(dx);
        columns((xo, fx, ix) => {
          for (let k = 0; k < channels; k++) expected[ix * channels + k] += dy[xo * channels + k]! * filter[fx * channels + k]!;
        });
        kernels.depthwiseInputRow(0, 4096, 8192, outWidth, width, channels, stride, left, taps);
        expect(Array.from(dx)).toEqual(Array.from(expected));
      });
    }
  }
});
