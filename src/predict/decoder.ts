import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { decodeImage } from '../data/decode.js';
import type { ResizeMode } from '../data/types.js';
import type { DecodeReply, DecodeRequest } from './decode-worker.js';

/**
 * Decodes image files off the main thread.
 *
 * tfjs runs a model call synchronously on the main thread; decoding there would stall for the whole
 * call (reading a file takes several event-loop turns). In a worker thread, the next batch is read
 * and decoded while the current one is in the model. Falls back to decoding on the main thread when
 * the worker cannot run (e.g. from TypeScript sources under a test runner, or after a worker crash).
 */
export class ImageDecoder {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, { resolve: (pixels: Uint8Array) => void; reject: (error: Error) => void }>();
  private nextId = 0;

  constructor(
    private readonly size: number,
    private readonly resize: ResizeMode,
    options: { worker?: boolean } = {},
  ) {
    const file = new URL('./decode-worker.js', import.meta.url);
    if (options.worker === false || !existsSync(fileURLToPath(file))) return;
    const worker = new Worker(file);
    // Referenced only while decodes are pending: an idle decoder must not keep the process alive,
    // and a busy one must (else Node could exit while awaiting it).
    worker.unref();
    worker.on('message', (reply: DecodeReply) => {
      const job = this.pending.get(reply.id);
      if (job === undefined) return;
      this.pending.delete(reply.id);
      if (this.pending.size === 0) worker.unref();
      if ('error' in reply) job.reject(new Error(reply.error));
      else job.resolve(reply.pixels);
    });
    const fail = (error: Error) => {
      this.worker = undefined;
      for (const job of this.pending.values()) job.reject(new Error(`the decoder thread stopped (${error.message})`));
      this.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exit code ${code}`)));
    this.worker = worker;
  }

  /** True when decoding runs in a worker thread. */
  get threaded(): boolean {
    return this.worker !== undefined;
  }

  /** `size × size × 3` RGB bytes, or an Error whose message is a short reason. */
  decode(path: string): Promise<Uint8Array> {
    const worker = this.worker;
    if (worker === undefined) return decodeImage(path, { size: this.size, resize: this.resize });
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (this.pending.size === 0) worker.ref();
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, path, size: this.size, resize: this.resize } satisfies DecodeRequest);
    });
  }

  /** Stops the worker; pending decodes are rejected. */
  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    if (worker) {
      worker.removeAllListeners('exit');
      // terminate() alone does not keep the event loop alive until the worker's exit is reported
      // (seen on Node 20: the process would end with the caller's await unsettled).
      const keepAlive = setInterval(() => {}, 1000);
      try {
        await worker.terminate();
      } finally {
        clearInterval(keepAlive);
      }
    }
    for (const job of this.pending.values()) job.reject(new Error('the decoder was closed'));
    this.pending.clear();
  }
}
