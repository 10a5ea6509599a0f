// GPU proof: the chest model (and the brain model, when its manifest is in models/) run with the CUDA
// execution provider really bound, compared with the CPU provider on the same inputs, and timed at
// several batch sizes against the CPU in the same run. Prints a markdown table for docs/benchmarks.md.
//
//   npx tsx bench/gpu/gpu-proof.ts [--device 0] [--batches 1,8,32] [--brain-batches 1,8,32]
//       [--cpu-brain-batches 1] [--min-seconds 3] [--models DIR] [--brain-sample FILE] [--json FILE]
//       [--no-brain] [--cpu-only]
//
// "Really bound" means three things: the session is created with the CUDA provider alone (ORT then
// throws instead of falling back), an ORT profile of one run shows every Conv executed by
// CUDAExecutionProvider, and GPU memory grows. --cpu-only runs the CPU half alone (no nvidia-smi, no
// CUDA), so the code paths are exercised on machines without a GPU; it proves nothing about the GPU.
//
// Only onnxruntime-node, Node built-ins and one dependency-free helper are used, so the script can
// travel to a bare GPU machine with little more than Node and onnxruntime-node.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gunzipSync } from 'node:zlib';
import ort from 'onnxruntime-node';
import { seededRandom } from '../../src/util/seeded-random.ts';

type Provider = 'cpu' | 'cuda';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CHEST_ID = 'squeezenet1_1-cxr-pneumonia';
const BRAIN_ID = 'meshnet-brain-gwm';
/** TF32 (the CUDA provider's default on Ampere and later) keeps 10 mantissa bits: allow for it. */
const CHEST_LOGIT_TOLERANCE = 0.02;
const CHEST_PROBABILITY_TOLERANCE = 0.005;
const BRAIN_ARGMAX_AGREEMENT = 0.995;

export class ProofError extends Error {
  override name = 'ProofError';
}

interface ModelUnderTest {
  id: string;
  label: string;
  file: string;
  unit: 'images' | 'volumes';
  /** One sample (C × spatial dims), the same for every provider. */
  item: Float32Array;
  itemShape: number[];
  inputName: string;
  outputName: string;
  compare(cpu: Float32Array, cuda: Float32Array): Comparison;
}

export interface Comparison {
  ok: boolean;
  maxAbsDiff: number;
  /** In words, for the report. */
  summary: string;
}

export interface Throughput {
  batch: number;
  runs: number;
  msPerBatch: number;
  itemsPerSecond: number;
}

export interface ProviderResult {
  provider: Provider;
  /** Nodes executed per provider in one profiled run, e.g. { CUDAExecutionProvider: 40 }. */
  placement: Record<string, number>;
  /** Conv nodes not executed by this provider (a silent fallback when > 0). */
  convElsewhere: number;
  throughput: Throughput[];
}

export interface ModelResult {
  id: string;
  label: string;
  unit: string;
  providers: ProviderResult[];
  comparison?: Comparison;
}

export interface ProofResult {
  date: string;
  cpuOnly: boolean;
  onnxruntime: string;
  cpuThreads: number;
  gpu?: { name: string; driver: string; memoryTotalMiB: number };
  gpuMemory?: { baselineMiB: number; peakMiB: number };
  models: ModelResult[];
  notes: string[];
}

// ---------------------------------------------------------------- inputs

/** A NIfTI-1 .nii.gz of uint8 voxels, min–max scaled to [0, 1], centre-cropped to `shape` (file order). */
export async function loadVolume(file: string, shape: number[]): Promise<Float32Array> {
  const nii = gunzipSync(await readFile(file));
  if (nii.readInt32LE(0) !== 348) throw new ProofError(`${file}: not a little-endian NIfTI-1 file`);
  const dims = [1, 2, 3].map((i) => nii.readInt16LE(40 + 2 * i));
  const datatype = nii.readInt16LE(70);
  const offset = Math.round(nii.readFloatLE(108));
  if (datatype !== 2) throw new ProofError(`${file}: datatype ${datatype}, only uint8 (2) is read here`);
  const [nx, ny, nz] = dims as [number, number, number];
  const [d, h, w] = shape as [number, number, number]; // D (slowest) … W (fastest)
  if (w > nx || h > ny || d > nz)
    throw new ProofError(`${file}: ${nx}×${ny}×${nz} is smaller than ${w}×${h}×${d}`);
  const voxels = nii.subarray(offset, offset + nx * ny * nz);
  let min = 255;
  let max = 0;
  for (const v of voxels) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const scale = max > min ? 1 / (max - min) : 0;
  const [x0, y0, z0] = [(nx - w) >> 1, (ny - h) >> 1, (nz - d) >> 1];
  const out = new Float32Array(d * h * w);
  for (let z = 0; z < d; z++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        out[(z * h + y) * w + x] = (voxels[((z + z0) * ny + (y + y0)) * nx + (x + x0)]! - min) * scale;
  return out;
}

function softmaxRows(logits: Float32Array, classes: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < logits.length; r += classes) {
    const row = Array.from(logits.subarray(r, r + classes));
    const m = Math.max(...row);
    const e = row.map((v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b, 0);
    out.push(...e.map((v) => v / s));
  }
  return out;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Fraction of voxels whose argmax over the class axis agrees ([1, C, …spatial] outputs). */
export function argmaxAgreement(a: Float32Array, b: Float32Array, classes: number): number {
  const n = a.length / classes;
  let same = 0;
  for (let v = 0; v < n; v++) {
    let ia = 0;
    let ib = 0;
    for (let c = 1; c < classes; c++) {
      if (a[c * n + v]! > a[ia * n + v]!) ia = c;
      if (b[c * n + v]! > b[ib * n + v]!) ib = c;
    }
    if (ia === ib) same++;
  }
  return same / n;
}

// ---------------------------------------------------------------- models

async function readManifest(id: string): Promise<Record<string, unknown> | null> {
  const file = path.join(repoRoot, 'models', id, 'model.json');
  if (!existsSync(file)) return null;
  return JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
}

/** The ONNX file: --models DIR/<id>/, then models/<id>/, then ../shared/models/<id>/. */
function findOnnx(id: string, name: string, modelsDir?: string): string {
  const candidates = [
    ...(modelsDir ? [path.join(modelsDir, id, name)] : []),
    path.join(repoRoot, 'models', id, name),
    path.join(repoRoot, '..', 'shared', 'models', id, name),
  ];
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new ProofError(`${id}: ${name} not found in ${candidates.join(', ')}`);
  return found;
}

async function inputShape(file: string, inputName: string): Promise<number[]> {
  const session = await ort.InferenceSession.create(file, { executionProviders: ['cpu'] });
  try {
    const meta = session.inputMetadata.find((m) => m.name === inputName);
    if (!meta || !meta.isTensor) throw new ProofError(`${file}: no tensor input '${inputName}'`);
    const dims = meta.shape.slice(1);
    if (!dims.every((d): d is number => typeof d === 'number'))
      throw new ProofError(`${file}: dynamic spatial dims`);
    return dims;
  } finally {
    await session.release();
  }
}

async function chestModel(modelsDir?: string): Promise<ModelUnderTest> {
  const m = await readManifest(CHEST_ID);
  if (!m) throw new ProofError(`models/${CHEST_ID}/model.json is missing`);
  const input = m.input as { name: string };
  const outputs = m.outputs as { name: string; labels: unknown[] };
  const file = findOnnx(CHEST_ID, m.onnx as string, modelsDir);
  const itemShape = await inputShape(file, input.name);
  const random = seededRandom(1500);
  // Roughly what ImageNet-normalised pixels look like: values in [-2, 2].
  const item = Float32Array.from({ length: itemShape.reduce((a, b) => a * b, 1) }, () => random() * 4 - 2);
  const classes = outputs.labels.length;
  return {
    id: CHEST_ID,
    label: 'chest X-ray (SqueezeNet 1.1, 3×224×224)',
    file,
    unit: 'images',
    item,
    itemShape,
    inputName: input.name,
    outputName: outputs.name,
    compare(cpu, cuda) {
      const logits = maxAbsDiff(cpu, cuda);
      const probabilities = maxAbsDiff(softmaxRows(cpu, classes), softmaxRows(cuda, classes));
      return {
        ok: logits <= CHEST_LOGIT_TOLERANCE && probabilities <= CHEST_PROBABILITY_TOLERANCE,
        maxAbsDiff: logits,
        summary: `logits max |Δ| ${logits.toExponential(2)} (≤ ${CHEST_LOGIT_TOLERANCE}), probabilities max |Δ| ${probabilities.toExponential(2)} (≤ ${CHEST_PROBABILITY_TOLERANCE})`,
      };
    },
  };
}

async function brainModel(
  modelsDir?: string,
  sample?: string,
  onnxOverride?: string,
): Promise<ModelUnderTest | null> {
  const m = await readManifest(BRAIN_ID);
  if (!m && !onnxOverride) return null;
  const input = (m?.input ?? { name: 'input' }) as { name: string };
  const outputs = (m?.outputs ?? { name: 'output', classes: 3 }) as { name: string; classes: number };
  const file = onnxOverride ?? findOnnx(BRAIN_ID, m!.onnx as string, modelsDir);
  const itemShape = await inputShape(file, input.name);
  const spatial = itemShape.slice(1);
  const samplePath =
    sample ??
    [modelsDir, path.join(repoRoot, '..', 'shared', 'models')]
      .filter((d): d is string => !!d)
      .map((d) => path.join(d, BRAIN_ID, 'sample', 't1_crop.nii.gz'))
      .find((f) => existsSync(f));
  let item: Float32Array;
  if (samplePath) item = await loadVolume(samplePath, spatial);
  else {
    const random = seededRandom(256);
    item = Float32Array.from({ length: spatial.reduce((a, b) => a * b, 1) }, random);
  }
  return {
    id: BRAIN_ID,
    label: `brain MRI segmentation (MeshNet, ${spatial.join('×')}${samplePath ? ', sample T1' : ', random volume'})`,
    file,
    unit: 'volumes',
    item,
    itemShape,
    inputName: input.name,
    outputName: outputs.name,
    compare(cpu, cuda) {
      const diff = maxAbsDiff(cpu, cuda);
      const agreement = argmaxAgreement(cpu, cuda, outputs.classes);
      return {
        ok: agreement >= BRAIN_ARGMAX_AGREEMENT,
        maxAbsDiff: diff,
        summary: `voxel labels agree on ${(agreement * 100).toFixed(3)} % (≥ ${BRAIN_ARGMAX_AGREEMENT * 100} %), scores max |Δ| ${diff.toExponential(2)}`,
      };
    },
  };
}

// ---------------------------------------------------------------- running

function sessionOptions(provider: Provider, deviceId: number): ort.InferenceSession.SessionOptions {
  return {
    // The provider alone: if CUDA cannot bind, create() throws instead of running on the CPU.
    executionProviders: [provider === 'cuda' ? { name: 'cuda', deviceId } : 'cpu'],
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
  };
}

function batchOf(model: ModelUnderTest, n: number): ort.Tensor {
  const data = new Float32Array(model.item.length * n);
  for (let i = 0; i < n; i++) data.set(model.item, i * model.item.length);
  return new ort.Tensor('float32', data, [n, ...model.itemShape]);
}

async function runOnce(
  session: ort.InferenceSession,
  model: ModelUnderTest,
  n: number,
): Promise<Float32Array> {
  const out = (await session.run({ [model.inputName]: batchOf(model, n) }, [model.outputName]))[
    model.outputName
  ];
  if (!out || out.type !== 'float32')
    throw new ProofError(`${model.id}: output '${model.outputName}' is not float32`);
  return out.data as Float32Array;
}

/** Which provider executed each node, from an ORT profile of one run. */
async function profilePlacement(model: ModelUnderTest, provider: Provider, deviceId: number) {
  const dir = await mkdtemp(path.join(tmpdir(), 'gpu-proof-profile-'));
  try {
    const session = await ort.InferenceSession.create(model.file, {
      ...sessionOptions(provider, deviceId),
      enableProfiling: true,
      profileFilePrefix: path.join(dir, 'profile'),
    });
    await runOnce(session, model, 1);
    session.endProfiling();
    await session.release();
    const files = (await readdir(dir)).filter((f) => f.endsWith('.json'));
    if (files.length !== 1) throw new ProofError(`expected one ORT profile in ${dir}, found ${files.length}`);
    const events = JSON.parse(await readFile(path.join(dir, files[0]!), 'utf8')) as {
      cat?: string;
      args?: { provider?: string; op_name?: string };
    }[];
    const placement: Record<string, number> = {};
    let convElsewhere = 0;
    const wanted = provider === 'cuda' ? 'CUDAExecutionProvider' : 'CPUExecutionProvider';
    for (const e of events) {
      if (e.cat !== 'Node' || !e.args?.provider) continue;
      placement[e.args.provider] = (placement[e.args.provider] ?? 0) + 1;
      if (/Conv/.test(e.args.op_name ?? '') && e.args.provider !== wanted) convElsewhere++;
    }
    return { placement, convElsewhere };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function measure(
  session: ort.InferenceSession,
  model: ModelUnderTest,
  batch: number,
  minSeconds: number,
  minRuns: number,
): Promise<Throughput> {
  await runOnce(session, model, batch); // warm-up: allocations, cuDNN algorithm search
  let runs = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  while (runs < minRuns || elapsed < minSeconds) {
    await runOnce(session, model, batch);
    runs++;
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  }
  return { batch, runs, msPerBatch: (elapsed * 1000) / runs, itemsPerSecond: (batch * runs) / elapsed };
}

// ---------------------------------------------------------------- GPU facts

function smi(args: string[]): Promise<string | null> {
  return new Promise((resolve) =>
    execFile('nvidia-smi', args, { timeout: 20_000 }, (err, stdout) => resolve(err ? null : stdout.trim())),
  );
}

async function gpuMemoryUsedMiB(deviceId: number): Promise<number> {
  const out = await smi(['--query-gpu=memory.used', '--format=csv,noheader,nounits', '-i', String(deviceId)]);
  const v = Number(out);
  if (out === null || !Number.isFinite(v))
    throw new ProofError('nvidia-smi --query-gpu=memory.used gave no number');
  return v;
}

// ---------------------------------------------------------------- report

function fmt(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

export function markdown(result: ProofResult): string {
  const lines: string[] = [];
  const gpu = result.gpu ? `${result.gpu.name} (driver ${result.gpu.driver})` : 'none (--cpu-only)';
  lines.push(
    `GPU proof, ${result.date}: GPU ${gpu}; onnxruntime-node ${result.onnxruntime}; CPU provider on ${result.cpuThreads} cores.`,
    '',
    '| model | batch | CPU items/s | CUDA items/s | CUDA vs CPU |',
    '| --- | ---: | ---: | ---: | ---: |',
  );
  for (const m of result.models) {
    const cpu = m.providers.find((p) => p.provider === 'cpu');
    const cuda = m.providers.find((p) => p.provider === 'cuda');
    const batches = [
      ...new Set([...(cpu?.throughput ?? []), ...(cuda?.throughput ?? [])].map((t) => t.batch)),
    ].sort((a, b) => a - b);
    for (const b of batches) {
      const c = cpu?.throughput.find((t) => t.batch === b);
      const g = cuda?.throughput.find((t) => t.batch === b);
      const ratio = c && g ? `${(g.itemsPerSecond / c.itemsPerSecond).toFixed(1)}×` : '—';
      lines.push(
        `| ${m.label} | ${b} | ${c ? `${fmt(c.itemsPerSecond)} ${m.unit}/s` : 'not run'} | ${g ? `${fmt(g.itemsPerSecond)} ${m.unit}/s` : 'not run'} | ${ratio} |`,
      );
    }
  }
  lines.push('');
  for (const m of result.models) {
    for (const p of m.providers) {
      const nodes = Object.entries(p.placement)
        .map(([k, v]) => `${v} on ${k}`)
        .join(', ');
      lines.push(
        `- ${m.id}, ${p.provider}: nodes executed ${nodes}; Conv nodes elsewhere: ${p.convElsewhere}`,
      );
    }
    if (m.comparison) lines.push(`- ${m.id}, CUDA vs CPU: ${m.comparison.summary}`);
  }
  if (result.gpuMemory) {
    const { baselineMiB, peakMiB } = result.gpuMemory;
    lines.push(
      `- GPU memory used: ${peakMiB - baselineMiB} MiB above the ${baselineMiB} MiB in use before (peak ${peakMiB} MiB)`,
    );
  }
  for (const n of result.notes) lines.push(`- ${n}`);
  return lines.join('\n');
}

// ---------------------------------------------------------------- main

export interface ProofOptions {
  cpuOnly: boolean;
  deviceId: number;
  batches: number[];
  brainBatches: number[];
  cpuBrainBatches: number[];
  minSeconds: number;
  minRuns: number;
  modelsDir?: string;
  brainSample?: string;
  brainOnnx?: string;
  noBrain: boolean;
  log: (line: string) => void;
}

export async function runProof(opts: ProofOptions): Promise<{ result: ProofResult; failures: string[] }> {
  const { log } = opts;
  const failures: string[] = [];
  const notes: string[] = [];
  const providers: Provider[] = opts.cpuOnly ? ['cpu'] : ['cpu', 'cuda'];
  const result: ProofResult = {
    date: new Date().toISOString().slice(0, 10),
    cpuOnly: opts.cpuOnly,
    onnxruntime: ort.env.versions.node ?? 'unknown',
    cpuThreads: cpus().length,
    models: [],
    notes,
  };
  if (!opts.cpuOnly) {
    const info = await smi([
      '--query-gpu=name,driver_version,memory.total',
      '--format=csv,noheader,nounits',
      '-i',
      String(opts.deviceId),
    ]);
    if (!info)
      throw new ProofError('nvidia-smi did not answer: no NVIDIA driver here (use --cpu-only for a dry run)');
    const [name, driver, total] = info.split(',').map((s) => s.trim());
    result.gpu = { name: name!, driver: driver!, memoryTotalMiB: Number(total) };
    const baseline = await gpuMemoryUsedMiB(opts.deviceId);
    result.gpuMemory = { baselineMiB: baseline, peakMiB: baseline };
  }
  const samplePeak = async () => {
    if (!result.gpuMemory) return;
    result.gpuMemory.peakMiB = Math.max(result.gpuMemory.peakMiB, await gpuMemoryUsedMiB(opts.deviceId));
  };

  const models: { model: ModelUnderTest; batches: Record<Provider, number[]> }[] = [];
  const chest = await chestModel(opts.modelsDir);
  models.push({ model: chest, batches: { cpu: opts.batches, cuda: opts.batches } });
  if (!opts.noBrain) {
    const brain = await brainModel(opts.modelsDir, opts.brainSample, opts.brainOnnx);
    if (brain) models.push({ model: brain, batches: { cpu: opts.cpuBrainBatches, cuda: opts.brainBatches } });
    else notes.push(`brain model skipped: models/${BRAIN_ID}/model.json is not there`);
  }

  for (const { model, batches } of models) {
    const entry: ModelResult = { id: model.id, label: model.label, unit: model.unit, providers: [] };
    result.models.push(entry);
    const reference: Partial<Record<Provider, Float32Array>> = {};
    for (const provider of providers) {
      log(`${model.id}: ${provider} session`);
      const session = await ort.InferenceSession.create(
        model.file,
        sessionOptions(provider, opts.deviceId),
      ).catch((err: unknown) => {
        throw new ProofError(`${model.id}: the ${provider} provider did not bind: ${(err as Error).message}`);
      });
      try {
        const { placement, convElsewhere } = await profilePlacement(model, provider, opts.deviceId);
        if (convElsewhere > 0)
          failures.push(`${model.id}: ${convElsewhere} Conv nodes did not run on ${provider}`);
        reference[provider] = await runOnce(session, model, 1);
        const throughput: Throughput[] = [];
        for (const b of batches[provider]) {
          const t = await measure(session, model, b, opts.minSeconds, opts.minRuns);
          log(
            `${model.id}: ${provider} batch ${b}: ${fmt(t.itemsPerSecond)} ${model.unit}/s (${t.runs} runs)`,
          );
          throughput.push(t);
          if (provider === 'cuda') await samplePeak();
        }
        entry.providers.push({ provider, placement, convElsewhere, throughput });
      } finally {
        await session.release();
      }
    }
    if (reference.cpu && reference.cuda) {
      entry.comparison = model.compare(reference.cpu, reference.cuda);
      if (!entry.comparison.ok)
        failures.push(`${model.id}: CUDA and CPU outputs differ: ${entry.comparison.summary}`);
    }
  }
  if (opts.cpuOnly) notes.push('--cpu-only: CUDA was not run; these figures prove nothing about the GPU');
  return { result, failures };
}

function numbers(list: string | undefined, fallback: number[]): number[] {
  if (list === undefined) return fallback;
  const out = list.split(',').map((s) => Number(s.trim()));
  if (out.some((n) => !Number.isInteger(n) || n < 1)) throw new ProofError(`bad batch list '${list}'`);
  return out;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      'cpu-only': { type: 'boolean' },
      device: { type: 'string' },
      batches: { type: 'string' },
      'brain-batches': { type: 'string' },
      'cpu-brain-batches': { type: 'string' },
      'min-seconds': { type: 'string' },
      'min-runs': { type: 'string' },
      models: { type: 'string' },
      'brain-sample': { type: 'string' },
      'brain-onnx': { type: 'string' },
      'no-brain': { type: 'boolean' },
      json: { type: 'string' },
    },
  });
  const { result, failures } = await runProof({
    cpuOnly: values['cpu-only'] ?? false,
    deviceId: Number(values.device ?? 0),
    batches: numbers(values.batches, [1, 8, 32]),
    brainBatches: numbers(values['brain-batches'], [1, 8, 32]),
    cpuBrainBatches: numbers(values['cpu-brain-batches'], [1]),
    minSeconds: Number(values['min-seconds'] ?? 3),
    minRuns: Number(values['min-runs'] ?? 3),
    modelsDir: values.models,
    brainSample: values['brain-sample'],
    brainOnnx: values['brain-onnx'],
    noBrain: values['no-brain'] ?? false,
    log: (line) => console.error(line),
  });
  console.log(markdown(result));
  if (values.json) await writeFile(values.json, JSON.stringify({ ...result, failures }, null, 2));
  for (const f of failures) console.error(`FAIL ${f}`);
  return failures.length === 0 ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(
        `gpu-proof: ${err instanceof ProofError ? err.message : String((err as Error).stack ?? err)}`,
      );
      process.exit(1);
    },
  );
}
