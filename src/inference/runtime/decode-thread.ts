import { parentPort, workerData } from 'node:worker_threads';
import { errorMessage } from '../../observability/error-message.ts';
import type { InstanceManifest } from '../../models/manifest.ts';
import {
  decodeImage,
  DecodeError,
  setDecodeLimits,
  type DecodedImage,
  type DecodeLimits,
  type DecodeOptions,
} from '../../imaging/decode.ts';
import { instanceInput, type InstanceInput } from '../instance-input.ts';

// One decode thread of DecodePool. 'sample': file + manifest in, the instance model's input sample out
// (or why the model cannot use the image). 'image': file + decode options in, the decoded image out
// (volume models assemble slices). Pixel buffers are transferred, not copied. 'recycle': a sample's
// buffer handed back once its batch has run, for the next sample of that size.

export type DecodeRequest =
  | { id: number; kind: 'sample'; file: string; manifest: InstanceManifest }
  | { id: number; kind: 'image'; file: string; options: DecodeOptions };

export interface RecycleMessage {
  kind: 'recycle';
  buffer: ArrayBuffer;
}

/** Bytes of returned sample buffers a thread keeps (a chest sample is 602 KB). */
const SPARE_BYTES_MAX = 32 * 1024 * 1024;

/**
 * Why samples are recycled: a fresh 600 KB array per sample, freed on the main thread, costs this
 * thread page faults and the allocator's trimming, 0.2 to 1.2 ms per sample measured, several times
 * the kernel's 0.2 ms. Oldest spares go first when the bytes run over.
 */
const spares: ArrayBuffer[] = [];
let spareBytes = 0;

function keepSpare(buffer: ArrayBuffer): void {
  spares.push(buffer);
  spareBytes += buffer.byteLength;
  while (spareBytes > SPARE_BYTES_MAX) spareBytes -= spares.shift()!.byteLength;
}

function sampleArray(length: number): Float32Array {
  const i = spares.findIndex((b) => b.byteLength === length * 4);
  if (i < 0) return new Float32Array(length);
  const [buffer] = spares.splice(i, 1);
  spareBytes -= buffer!.byteLength;
  return new Float32Array(buffer!);
}

export type DecodeReply =
  | { id: number; input: InstanceInput }
  | { id: number; image: DecodedImage }
  | { id: number; message: string; decodeError: boolean };

async function handle(request: DecodeRequest): Promise<{ reply: DecodeReply; transfer: ArrayBuffer[] }> {
  if (request.kind === 'sample') {
    const input = await instanceInput(request.file, request.manifest, sampleArray);
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
  const limits = (workerData as { decodeLimits?: Partial<DecodeLimits> } | null)?.decodeLimits;
  if (limits) setDecodeLimits(limits);
  // One image at a time: a thread holds one file in memory, and answers in the order it was asked.
  let previous = Promise.resolve();
  port.on('message', (request: DecodeRequest | RecycleMessage) => {
    if (request.kind === 'recycle') {
      keepSpare(request.buffer);
      return;
    }
    previous = previous.then(() =>
      handle(request).then(
        ({ reply, transfer }) => port.postMessage(reply, transfer),
        (err: unknown) => {
          const message = errorMessage(err);
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
