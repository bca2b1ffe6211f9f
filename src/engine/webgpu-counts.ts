/**
 * Counts what the WebGPU backend does per unit of work (a training step, a forward pass): shader
 * dispatches, GPU→CPU reads, buffers taken from the pool (and how many of them were new GPU
 * buffers), with the dispatches named by the tfjs kernel (or custom op) that issued them and by
 * shader class.
 *
 * On a GPU, most of a small-batch training step's time goes to these per-operation costs, not to
 * arithmetic; and none of them depends on the adapter's speed, so a CPU adapter (Mesa's lavapipe)
 * counts them exactly as a data-centre GPU would.
 */
import { hookKernelRuns, hookWebGPUWork } from './tfjs-internals.js';

/** What was counted between two `take()`s. */
export interface WebGPUWorkCounts {
  dispatches: number;
  /** GPU→CPU reads (each `data()` of a tensor not already on the CPU). */
  reads: number;
  readBytes: number;
  /** Buffers taken from the backend's pool: outputs, uploads, uniform buffers, staging buffers. */
  allocations: number;
  /** Of those, the ones the pool did not have (a new GPU buffer was created). */
  newBuffers: number;
  /** Dispatches by the outermost tfjs kernel or custom op that issued them ('(no kernel)' outside any). */
  byKernel: Record<string, number>;
  /** Dispatches by shader class. */
  byProgram: Record<string, number>;
  /** Dispatches by kernel and shader class, as `Kernel/ShaderClass`. */
  byKernelProgram: Record<string, number>;
}

function emptyCounts(): WebGPUWorkCounts {
  return { dispatches: 0, reads: 0, readBytes: 0, allocations: 0, newBuffers: 0, byKernel: {}, byProgram: {}, byKernelProgram: {} };
}

const bump = (table: Record<string, number>, key: string): void => {
  table[key] = (table[key] ?? 0) + 1;
};

/**
 * Counts the active WebGPU backend's work from construction until `stop()`. Kernels are named as
 * the outermost one running (a gradient's Multiply is a Multiply; a custom op's inner kernels are
 * the custom op's), which is what a per-operation overhead is charged to.
 */
export class WebGPUWorkCounter {
  private counts = emptyCounts();
  private readonly kernels: string[] = [];
  private readonly unhook: Array<() => void>;

  constructor() {
    const unhookWork = hookWebGPUWork({
      dispatch: (program) => {
        this.counts.dispatches++;
        bump(this.counts.byProgram, program);
        const kernel = this.kernels[0] ?? '(no kernel)';
        bump(this.counts.byKernel, kernel);
        bump(this.counts.byKernelProgram, `${kernel}/${program}`);
      },
      read: (bytes) => {
        this.counts.reads++;
        this.counts.readBytes += bytes;
      },
      acquire: (_bytes, created) => {
        this.counts.allocations++;
        if (created) this.counts.newBuffers++;
      },
    });
    const unhookKernels = hookKernelRuns(
      (name) => this.kernels.push(name),
      () => this.kernels.pop(),
    );
    // Undone in reverse order of hooking.
    this.unhook = [unhookKernels, unhookWork];
  }

  /** What was counted since the last take (or since construction), and starts counting afresh. */
  take(): WebGPUWorkCounts {
    const taken = this.counts;
    this.counts = emptyCounts();
    return taken;
  }

  /** Stops counting and puts the backend back as it was. */
  stop(): void {
    for (const undo of this.unhook.splice(0)) undo();
  }
}

/** The `n` largest entries of a count table, largest first. */
export function topCounts(table: Record<string, number>, n: number): Array<{ name: string; count: number }> {
  return Object.entries(table)
    .map(([name, count]) => ({ name, count }))
    .sort((a, b) => b.count - a.count || a.name.localeCompare(b.name))
    .slice(0, n);
}
