import { parentPort } from 'node:worker_threads';
import type { InstanceManifest } from '../../src/models/manifest.ts';
import { decodeImage, DecodeError, type DecodedImage, type DecodeOptions } from '../inference/decode.ts';
import { instanceInput, type InstanceInput } from '../inference/instance-input.ts';

// One decode thread of DecodePool. 'sample': file + manifest in, the instance model's input sample out
// (or why the model cannot use the image). 'image': file + decode options in, the decoded image out
// (volume models assemble slices). Pixel buffers are transferred, not copied.

export type DecodeRequest =
  | { id: number; kind: 'sample'; file: string; manifest: InstanceManifest }
  | { id: number; kind: 'image'; file: string; options: DecodeOptions };

export type DecodeReply =
  | { id: number; input: InstanceInput }
  | { id: number; image: DecodedImage }
  | { id: number; message: string; decodeError: boolean };

async function handle(request: DecodeRequest): Promise<{ reply: DecodeReply; transfer: ArrayBuffer[] }> {
  if (request.kind === 'sample') {
    const input = await instanceInput(request.file, request.manifest);
    const transfer = 'sample' in input ? [input.sample.buffer as ArrayBuffer] : [];
    return { reply: { id: request.id, input }, transfer };
  }
  const image = await decodeImage(request.file, request.options);
  return {
    reply: { id: request.id, image },
    transfer: [...new Set(image.pixels.map((p) => p.buffer as ArrayBuffer))],
  };
}

const port = parentPort;
if (port) {
  // One image at a time: a thread holds one file in memory, and answers in the order it was asked.
  let previous = Promise.resolve();
  port.on('message', (request: DecodeRequest) => {
    previous = previous.then(() =>
      handle(request).then(
        ({ reply, transfer }) => port.postMessage(reply, transfer),
        (err: unknown) => {
          const message = err instanceof Error ? err.message : String(err);
          port.postMessage({
            id: request.id,
            message,
            decodeError: err instanceof DecodeError,
          } satisfies DecodeReply);
        },
      ),
    );
  });
}
