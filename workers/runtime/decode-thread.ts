import { parentPort } from 'node:worker_threads';
import type { InstanceManifest } from '../../src/models/manifest.ts';
import { DecodeError } from '../inference/decode.ts';
import { instanceInput } from '../inference/instance-input.ts';

// One decode thread of DecodePool: file + manifest in, the model's input sample out (transferred, not
// copied), or the reason the image cannot be used.

export interface PrepareRequest {
  id: number;
  file: string;
  manifest: InstanceManifest;
}

export type PrepareReply =
  | { id: number; sample: Float32Array }
  | { id: number; rejected: string }
  | { id: number; message: string; decodeError: boolean };

const port = parentPort;
if (port) {
  port.on('message', (request: PrepareRequest) => {
    void instanceInput(request.file, request.manifest).then(
      (input) => {
        if ('sample' in input) {
          port.postMessage({ id: request.id, sample: input.sample } satisfies PrepareReply, [
            input.sample.buffer as ArrayBuffer,
          ]);
        } else port.postMessage({ id: request.id, rejected: input.rejected } satisfies PrepareReply);
      },
      (err: unknown) => {
        const message = err instanceof Error ? err.message : String(err);
        port.postMessage({
          id: request.id,
          message,
          decodeError: err instanceof DecodeError,
        } satisfies PrepareReply);
      },
    );
  });
}
