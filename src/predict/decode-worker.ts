/**
 * A worker thread that decodes images with the same `decodeImage` as training. It has its own event
 * loop, so files keep being read and decoded while the main thread is busy in a (synchronous) model
 * call: that is what lets decoding overlap inference.
 */
import { parentPort } from 'node:worker_threads';
import { decodeImage } from '../data/decode.js';
import type { ResizeMode } from '../data/types.js';

/** A request: decode `path` at `size` px. */
export interface DecodeRequest {
  id: number;
  path: string;
  size: number;
  resize: ResizeMode;
}

/** The answer: the pixels (transferred, not copied) or a short reason. */
export type DecodeReply = { id: number; pixels: Uint8Array } | { id: number; error: string };

parentPort?.on('message', (request: DecodeRequest) => {
  decodeImage(request.path, { size: request.size, resize: request.resize }).then(
    (pixels) => parentPort!.postMessage({ id: request.id, pixels } satisfies DecodeReply, [pixels.buffer as ArrayBuffer]),
    (error: unknown) =>
      parentPort!.postMessage({ id: request.id, error: error instanceof Error ? error.message : String(error) } satisfies DecodeReply),
  );
});
