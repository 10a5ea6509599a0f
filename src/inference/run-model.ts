import ort from 'onnxruntime-node';
import { executionProvider, inferenceSeconds } from '../observability/metrics.ts';
import {
  hasExclusiveClasses,
  type InstanceManifest,
  type ModelManifest,
  type VolumeManifest,
} from '../models/manifest.ts';
import type { LoadedModel } from '../models/registry.ts';
import type { Finding, ModelResult, SourceInstanceRef } from '../pipeline/findings.ts';
import { MicroBatcher, type RunOptions } from './runtime/batcher.ts';
import type { DecodePool } from './runtime/decode-pool.ts';
import {
  createSession,
  DEFAULT_RUNTIME,
  warmUp,
  type ProviderName,
  type RuntimeOptions,
} from './runtime/session.ts';
import { DecodeError } from '../imaging/decode.ts';
import { instanceInput } from './instance-input.ts';
import { runVolumeModel, UnusableSeriesError } from './run-volume.ts';
import { inferenceEvents } from './events.ts';

// One model end to end. 'instance' unit: each source image → decode → preprocess → batched run →
// activation → per-label aggregation across the instances → coded findings. 'volume' unit: see
// run-volume.ts. Both share the session, its contract check, warm-up and micro-batcher.

export const DEFAULT_MAX_WAIT_MS = 5;

export interface LoadedModelSession {
  model: LoadedModel;
  provider: ProviderName;
  session: ort.InferenceSession;
  batcher: MicroBatcher;
  /** Where instance images are decoded and preprocessed: a DecodePool, or this thread without one. */
  decodePool?: DecodePool;
  close(): Promise<void>;
}

/** The ONNX file does not match what its manifest says (input name or shape, output name or width). */
export class ModelMismatchError extends Error {
  override name = 'ModelMismatchError';
}

/** None of the job's images could be used; the reasons are in the message. */
export class NoUsableImagesError extends Error {
  override name = 'NoUsableImagesError';
}

/** The tensor shapes a manifest promises: input per sample [C, …], output per sample [classes, …]. */
function contractShapes(m: ModelManifest): { input: number[]; output: number[] } {
  if (m.unit === 'volume') {
    return { input: [1, ...m.input.shape], output: [m.outputs.classes, ...m.input.shape] };
  }
  return { input: [m.input.channels, m.input.height, m.input.width], output: [m.outputs.labels.length] };
}

export async function openModel(
  model: LoadedModel,
  opts: RuntimeOptions = DEFAULT_RUNTIME,
  decodePool?: DecodePool,
): Promise<LoadedModelSession> {
  const m = model.manifest;
  const shapes = contractShapes(m);
  const { session, provider } = await createSession(model.onnxPath, opts);
  try {
    checkContract(m, session, shapes);
    if (opts.warmUp !== false) await warmUp(session, m.input.name, [1, ...shapes.input]);
  } catch (err) {
    await session.release();
    throw err;
  }
  executionProvider.labels({ model: m.id, provider }).set(1);
  const inputName = m.input.name;
  const outputName = m.outputs.name;
  const itemSize = shapes.input.reduce((a, b) => a * b, 1);
  const rowSize = shapes.output.reduce((a, b) => a * b, 1);
  const batcher = new MicroBatcher(
    async (data, n) => {
      const feeds = { [inputName]: new ort.Tensor('float32', data, [n, ...shapes.input]) };
      const out = (await session.run(feeds, [outputName]))[outputName];
      if (!out || out.type !== 'float32' || out.size !== n * rowSize) {
        throw new ModelMismatchError(
          `${m.id}: output '${outputName}' is not float32 [${n}, ${shapes.output.join(', ')}]`,
        );
      }
      return out.data as Float32Array;
    },
    {
      batchLimit: m.batchLimit,
      maxWaitMs: opts.maxWaitMs ?? DEFAULT_MAX_WAIT_MS,
      itemSize,
    },
  );
  return {
    model,
    provider,
    session,
    batcher,
    ...(decodePool ? { decodePool } : {}),
    close: async () => {
      executionProvider.remove({ model: m.id, provider });
      await session.release();
    },
  };
}

function checkContract(
  m: ModelManifest,
  session: ort.InferenceSession,
  shapes: { input: number[]; output: number[] },
): void {
  const input = session.inputMetadata.find((i) => i.name === m.input.name);
  if (!input)
    throw new ModelMismatchError(
      `${m.id}: the ONNX file has no input '${m.input.name}' (it has ${session.inputNames.join(', ')})`,
    );
  if (input.isTensor) {
    if (input.type !== 'float32')
      throw new ModelMismatchError(`${m.id}: input '${input.name}' is ${input.type}, not float32`);
    if (!batchedShapeMatches(input.shape, shapes.input)) {
      throw new ModelMismatchError(
        `${m.id}: input '${input.name}' has shape [${input.shape.join(', ')}], manifest says [N, ${shapes.input.join(', ')}]`,
      );
    }
  }
  const output = session.outputMetadata.find((o) => o.name === m.outputs.name);
  if (!output)
    throw new ModelMismatchError(
      `${m.id}: the ONNX file has no output '${m.outputs.name}' (it has ${session.outputNames.join(', ')})`,
    );
  if (!output.isTensor) return;
  if (output.type !== 'float32')
    throw new ModelMismatchError(`${m.id}: output '${output.name}' is ${output.type}, not float32`);
  if (m.unit === 'volume') {
    if (!batchedShapeMatches(output.shape, shapes.output)) {
      throw new ModelMismatchError(
        `${m.id}: output '${output.name}' has shape [${output.shape.join(', ')}], manifest says [N, ${shapes.output.join(', ')}]`,
      );
    }
    return;
  }
  const last = output.shape[output.shape.length - 1];
  if (typeof last === 'number' && last !== m.outputs.labels.length) {
    throw new ModelMismatchError(
      `${m.id}: output '${output.name}' has ${last} classes, the manifest lists ${m.outputs.labels.length} labels`,
    );
  }
}

/**
 * Whether an ONNX tensor shape is [N, ...sample]: the batch axis is free (dynamic or any size), every
 * other axis must match where the file fixes it (symbolic axes match anything).
 */
function batchedShapeMatches(dims: readonly (number | string)[], sample: readonly number[]): boolean {
  return (
    dims.length === sample.length + 1 &&
    sample.every((e, i) => typeof dims[i + 1] !== 'number' || dims[i + 1] === e)
  );
}

export function activate(kind: InstanceManifest['outputs']['activation'], row: Float32Array): number[] {
  const values = Array.from(row);
  if (kind === 'sigmoid') return values.map((v) => 1 / (1 + Math.exp(-v)));
  if (kind === 'softmax') {
    const max = values.reduce((a, b) => Math.max(a, b));
    const exps = values.map((v) => Math.exp(v - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    return exps.map((e) => e / sum);
  }
  return values;
}

/**
 * Runs the model on every source instance (first frame of multi-frame objects) and aggregates.
 * Images that fail to decode or that the manifest does not accept are skipped and logged; when none
 * is left the job fails with NoUsableImagesError. `sources` in the result lists the images used.
 * `inferenceMs` is the wall time of the whole call: decode, preprocessing and the batched runs.
 */
export async function runModel(
  loaded: LoadedModelSession,
  sources: SourceInstanceRef[],
  options: RunOptions = {},
): Promise<ModelResult> {
  const started = performance.now();
  const m = loaded.model.manifest;
  const result =
    m.unit === 'volume'
      ? await runVolume(loaded, m, sources)
      : await runInstances(loaded, m, sources, options);
  const inferenceMs = performance.now() - started;
  inferenceSeconds.labels({ model: m.id, provider: loaded.provider }).observe(inferenceMs / 1000);
  inferenceEvents.modelRan(m.id, loaded.provider, result.sources.length, inferenceMs);
  return { model: loaded.model.identity, provider: loaded.provider, inferenceMs, ...result };
}

type UnitResult = Omit<ModelResult, 'model' | 'provider' | 'inferenceMs'>;

async function runVolume(
  loaded: LoadedModelSession,
  m: VolumeManifest,
  sources: SourceInstanceRef[],
): Promise<UnitResult> {
  try {
    return await runVolumeModel(m, loaded.batcher, sources, loaded.decodePool);
  } catch (err) {
    // A series that is not one volume will not become one on a retry.
    if (err instanceof UnusableSeriesError) throw new NoUsableImagesError(err.message);
    throw err;
  }
}

async function runInstances(
  loaded: LoadedModelSession,
  m: InstanceManifest,
  sources: SourceInstanceRef[],
  options: RunOptions,
): Promise<UnitResult> {
  const rows: (number[] | undefined)[] = new Array(sources.length);
  const skipped: string[] = [];

  // Bounded so a 500-slice series never holds 500 decoded images at once, yet can fill a batch. With a
  // decode pool, two batches' worth: the next batch is prepared in threads while this thread is blocked
  // in the current run (onnxruntime-node runs a session synchronously). Without one, preparing and
  // running alternate on this thread whatever the number of lanes.
  const pool = loaded.decodePool;
  // Samples whose batch has run are written over by later ones, here or in the decode threads: a
  // fresh 600 KB array per image costs more in page faults than the kernel that fills it.
  const spares: Float32Array[] = [];
  const reuse = (length: number) => {
    const spare = spares.pop();
    return spare?.length === length ? spare : new Float32Array(length);
  };
  const prepare = (file: string) => (pool ? pool.prepare(file, m) : instanceInput(file, m, reuse));
  const recycle = (sample: Float32Array) => (pool ? pool.recycle(sample) : spares.push(sample));
  let next = 0;
  const lane = async (): Promise<void> => {
    for (let i = next++; i < sources.length; i = next++) {
      const source = sources[i]!;
      let input;
      try {
        input = await prepare(source.file);
      } catch (err) {
        if (!(err instanceof DecodeError)) throw err; // I/O trouble is not the image's fault: let the job retry
        skipped.push(`${source.sopInstanceUid}: ${err.message}`);
        continue;
      }
      if ('rejected' in input) {
        skipped.push(`${source.sopInstanceUid}: ${input.rejected}`);
        continue;
      }
      rows[i] = activate(m.outputs.activation, await loaded.batcher.run(input.sample, options));
      recycle(input.sample);
    }
  };
  const lanes = pool ? 2 * m.batchLimit : m.batchLimit;
  await Promise.all(Array.from({ length: Math.min(lanes, sources.length) }, lane));

  if (skipped.length > 0) {
    inferenceEvents.imagesSkipped(m.id, skipped);
  }
  const used = sources.filter((_, i) => rows[i] !== undefined);
  const scores = rows.filter((r): r is number[] => r !== undefined);
  if (scores.length === 0) {
    throw new NoUsableImagesError(
      `${m.id}: none of the ${sources.length} images could be used${skipped.length ? `: ${skipped.slice(0, 5).join('; ')}` : ''}`,
    );
  }

  // Per label over the instances, as the manifest aggregates.
  const probabilities = m.outputs.labels.map((_, k) => {
    const values = scores.map((s) => s[k]!);
    return m.aggregation === 'max'
      ? values.reduce((a, b) => Math.max(a, b))
      : values.reduce((a, b) => a + b, 0) / values.length;
  });
  const findings: Finding[] = [];
  if (hasExclusiveClasses(m)) {
    // One of the classes is true of the image: the most probable one (the first on a tie) is the finding.
    const top = probabilities.reduce((best, p, k) => (p > probabilities[best]! ? k : best), 0);
    const label = m.outputs.labels[top]!;
    findings.push({
      kind: 'exclusive-classification',
      label: label.name,
      concept: label.concept,
      probability: probabilities[top]!,
      classes: m.outputs.labels.flatMap((l, k) =>
        l.report || k === top ? [{ label: l.name, concept: l.concept, probability: probabilities[k]! }] : [],
      ),
    });
  } else {
    m.outputs.labels.forEach((label, k) => {
      if (!label.report) return;
      const probability = probabilities[k]!;
      findings.push({
        kind: 'classification',
        label: label.name,
        concept: label.concept,
        probability,
        threshold: label.threshold,
        positive: probability >= label.threshold,
      });
    });
  }
  return { findings, sources: used, skipped };
}
