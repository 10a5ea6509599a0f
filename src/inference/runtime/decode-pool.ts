import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import type { InstanceManifest } from '../../models/manifest.ts';
import {
  DecodeError,
  type DecodedImage,
  type DecodeLimits,
  type DecodeOptions,
} from '../../imaging/decode.ts';
import type { InstanceInput } from '../instance-input.ts';
import type { DecodeReply, DecodeRequest, RecycleMessage } from './decode-thread.ts';
import { inferenceEvents } from '../events.ts';
import { siblingModule, startModuleThread } from './thread-entry.ts';

// Decoding and preprocessing off the main thread. onnxruntime-node runs a session synchronously on the
// JS thread, and a JPEG 2000 radiograph takes ~200 ms to decode: on the main thread the two alternate
// and, in the `all` role, ingest stalls while an image decodes. In threads, the next batch is prepared
// while the current one runs, and a decoder that crashes takes down its thread, not the worker.

/** Default pool size: every core but the one the main thread needs, at most 4. */
export function defaultDecodeThreads(): number {
  return Math.min(4, Math.max(1, availableParallelism() - 1));
}

interface Task {
  request: DecodeRequest;
  resolve: (value: InstanceInput | DecodedImage) => void;
  reject: (err: unknown) => void;
}

interface Slot {
  thread: Worker;
  /** Sent and not answered yet. */
  tasks: Map<number, Task>;
  startedAt: number;
  dead?: boolean;
}

/** A thread that dies sooner than this after its start counts as failing to start. */
const QUICK_DEATH_MS = 5000;
const MAX_RESTART_DELAY_MS = 30_000;

/**
 * Images handed to a thread ahead of time. The main thread is blocked while a batch runs, so a thread
 * that were given one image at a time would sit idle after the first; with a queue of its own it keeps
 * preparing the next batch.
 */
const THREAD_QUEUE_DEPTH = 16;

// Eval'd as CommonJS: under tsx the thread must register tsx itself (a worker does not inherit the
// loader hooks in Node 20), from the URL the parent resolved (the thread's own resolution would start
// from the working directory); a built `dist/` needs nothing.

export class DecodePool {
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private nextId = 1;
  private nextRecycle = 0;
  private closed = false;
  /** Threads that died right after starting, in a row: their replacements wait longer each time. */
  private quickDeaths = 0;
  private readonly restarts = new Set<NodeJS.Timeout>();
  private readonly entry = siblingModule('decode-thread', import.meta.url);

  /** `limits`: each thread's decode limits where a call names none (config worker.maxDecodedImageBytes). */
  constructor(
    readonly size: number,
    private readonly limits: Partial<DecodeLimits> = {},
  ) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError('a decode pool needs at least one thread');
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  /** instanceInput() in a thread: the sample, or why the model cannot use the image; DecodeError when it cannot be decoded. */
  prepare(file: string, manifest: InstanceManifest): Promise<InstanceInput> {
    return this.submit({ id: this.nextId++, kind: 'sample', file, manifest }) as Promise<InstanceInput>;
  }

  /**
   * Hands a sample from prepare() back for reuse, once nothing reads it any more (its batch has run):
   * the array is detached here. Samples that do not own their whole buffer are left alone.
   */
  recycle(sample: Float32Array): void {
    const buffer = sample.buffer;
    if (this.closed || this.slots.length === 0) return;
    if (
      !(buffer instanceof ArrayBuffer) ||
      sample.byteOffset !== 0 ||
      sample.byteLength !== buffer.byteLength
    )
      return;
    const slot = this.slots[this.nextRecycle++ % this.slots.length]!;
    slot.thread.postMessage({ kind: 'recycle', buffer } satisfies RecycleMessage, [buffer]);
  }

  /** decodeImage() in a thread. */
  decode(file: string, options: DecodeOptions): Promise<DecodedImage> {
    return this.submit({ id: this.nextId++, kind: 'image', file, options }) as Promise<DecodedImage>;
  }

  private submit(request: DecodeRequest): Promise<InstanceInput | DecodedImage> {
    if (this.closed) return Promise.reject(new Error('the decode pool is closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ request, resolve, reject });
      this.dispatch();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const restart of this.restarts) clearTimeout(restart);
    this.restarts.clear();
    const closing = new Error('the decode pool is closed');
    for (const task of this.queue.splice(0)) task.reject(closing);
    for (const slot of this.slots) {
      for (const task of slot.tasks.values()) task.reject(closing);
      slot.tasks.clear();
    }
    await Promise.all(this.slots.map((slot) => slot.thread.terminate()));
  }

  private spawn(): Slot {
    const thread = startModuleThread(this.entry, { decodeLimits: this.limits });
    const slot: Slot = { thread, tasks: new Map(), startedAt: Date.now() };
    thread.unref();
    thread.on('message', (reply: DecodeReply) => {
      const task = slot.tasks.get(reply.id);
      if (!task) return;
      slot.tasks.delete(reply.id);
      if ('input' in reply) task.resolve(reply.input);
      else if ('image' in reply) task.resolve(reply.image);
      else task.reject(reply.decodeError ? new DecodeError(reply.message) : new Error(reply.message));
      this.dispatch();
    });
    const replace = (why: string) => {
      if (this.closed || slot.dead) return; // 'error' is followed by 'exit'
      slot.dead = true;
      this.quickDeaths = Date.now() - slot.startedAt < QUICK_DEATH_MS ? this.quickDeaths + 1 : 0;
      const delayMs = this.quickDeaths > 1 ? Math.min(MAX_RESTART_DELAY_MS, 250 * 2 ** this.quickDeaths) : 0;
      inferenceEvents.decodeThreadDied(why, slot.tasks.size, delayMs);
      // One of its images may be what killed it: their jobs fail (and retry), other threads go on.
      for (const task of slot.tasks.values()) {
        task.reject(new Error(`the decode thread died while preparing the image: ${why}`));
      }
      slot.tasks.clear();
      this.slots.splice(this.slots.indexOf(slot), 1);
      // A thread that cannot even start (a broken install) is retried ever more slowly, not in a loop.
      // Not unref'd: images may be waiting for this thread.
      const restart = setTimeout(() => {
        this.restarts.delete(restart);
        if (this.closed) return;
        this.slots.push(this.spawn());
        this.dispatch();
      }, delayMs);
      this.restarts.add(restart);
      this.dispatch();
    };
    thread.on('error', (err) => replace(err.message));
    thread.on('exit', (code) => replace(`exit code ${code}`));
    return slot;
  }

  private dispatch(): void {
    while (this.queue.length > 0 && this.slots.length > 0) {
      const slot = this.slots.reduce((a, b) => (b.tasks.size < a.tasks.size ? b : a));
      if (slot.tasks.size >= THREAD_QUEUE_DEPTH) break;
      const task = this.queue.shift()!;
      slot.tasks.set(task.request.id, task);
      slot.thread.postMessage(task.request);
    }
    // A thread with work keeps the process alive until it answers; an idle one does not.
    for (const slot of this.slots) {
      if (slot.tasks.size > 0) slot.thread.ref();
      else slot.thread.unref();
    }
  }
}
