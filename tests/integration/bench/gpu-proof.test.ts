import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { argmaxAgreement, loadVolume, markdown, type ProofResult } from '../../../bench/gpu/gpu-proof.ts';

// bench/gpu/gpu-proof.ts without a GPU: --cpu-only runs the CPU half end to end (sessions, the ORT
// profile that shows where nodes ran, throughput, JSON and markdown); the CUDA half of the report is
// checked on a result laid out as a GPU run would give it. The GPU figures themselves need a GPU host.

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const PATCH_MODEL = path.resolve(repoRoot, '../shared/models/meshnet-brain-gwm/gwm_patch64_transposed.onnx');

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'gpu-proof-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function proof(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'bench/gpu/gpu-proof.ts', ...args],
      { cwd: repoRoot, timeout: 300_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test('--cpu-only: chest and brain (64³ patch model) run on the CPU provider, every node placed there', async () => {
  const json = path.join(dir, 'proof.json');
  const { code, stdout, stderr } = await proof([
    '--cpu-only',
    '--batches',
    '1,2',
    '--cpu-brain-batches',
    '1',
    '--min-seconds',
    '0',
    '--min-runs',
    '1',
    '--brain-onnx',
    PATCH_MODEL,
    '--json',
    json,
  ]);
  assert.equal(code, 0, stderr);
  const result = JSON.parse(await readFile(json, 'utf8')) as ProofResult & { failures: string[] };
  assert.deepEqual(result.failures, []);
  assert.equal(result.cpuOnly, true);
  assert.equal(result.gpu, undefined);
  const [chest, brain] = result.models;
  assert.equal(chest!.id, 'squeezenet1_1-cxr-pneumonia');
  assert.equal(brain!.id, 'meshnet-brain-gwm');
  for (const m of [chest!, brain!]) {
    assert.deepEqual(
      m.providers.map((p) => p.provider),
      ['cpu'],
    );
    const cpu = m.providers[0]!;
    assert.ok((cpu.placement.CPUExecutionProvider ?? 0) > 0, JSON.stringify(cpu.placement));
    assert.deepEqual(Object.keys(cpu.placement), ['CPUExecutionProvider']);
    assert.equal(cpu.convElsewhere, 0);
    assert.equal(m.comparison, undefined, 'no CUDA, nothing compared');
    for (const t of cpu.throughput) assert.ok(t.runs >= 1 && t.itemsPerSecond > 0 && t.msPerBatch > 0);
  }
  assert.deepEqual(
    chest!.providers[0]!.throughput.map((t) => t.batch),
    [1, 2],
  );
  assert.deepEqual(
    brain!.providers[0]!.throughput.map((t) => t.batch),
    [1],
  );
  assert.match(
    stdout,
    /\| chest X-ray \(SqueezeNet 1\.1, 3×224×224\) \| 2 \| [\d.]+ images\/s \| not run \| — \|/,
  );
  assert.match(stdout, /--cpu-only: CUDA was not run/);
});

test('without a GPU and without --cpu-only it refuses plainly', async () => {
  const { code, stderr } = await proof(['--no-brain', '--batches', '1']);
  // On a GPU host this would run the proof; here nvidia-smi is absent.
  if (code === 0) return;
  assert.equal(code, 1);
  assert.match(stderr, /gpu-proof: nvidia-smi did not answer: no NVIDIA driver here/);
});

test('report: CUDA vs CPU ratios, placement, comparison and GPU memory in the markdown', () => {
  const tp = (batch: number, ips: number) => ({
    batch,
    runs: 10,
    msPerBatch: (1000 * batch) / ips,
    itemsPerSecond: ips,
  });
  const result: ProofResult = {
    date: '2026-12-01',
    cpuOnly: false,
    onnxruntime: '1.29.0',
    cpuThreads: 16,
    gpu: { name: 'NVIDIA H200', driver: '580.159.03', memoryTotalMiB: 143771 },
    gpuMemory: { baselineMiB: 500, peakMiB: 2548 },
    models: [
      {
        id: 'squeezenet1_1-cxr-pneumonia',
        label: 'chest',
        unit: 'images',
        providers: [
          {
            provider: 'cpu',
            placement: { CPUExecutionProvider: 41 },
            convElsewhere: 0,
            throughput: [tp(1, 100), tp(8, 200)],
          },
          {
            provider: 'cuda',
            placement: { CUDAExecutionProvider: 40, CPUExecutionProvider: 1 },
            convElsewhere: 0,
            throughput: [tp(1, 1000), tp(8, 5000)],
          },
        ],
        comparison: { ok: true, maxAbsDiff: 0.001, summary: 'logits max |Δ| 1.00e-3' },
      },
    ],
    notes: [],
  };
  const md = markdown(result);
  assert.match(md, /GPU proof, 2026-12-01: GPU NVIDIA H200 \(driver 580\.159\.03\)/);
  assert.match(md, /\| chest \| 1 \| 100 images\/s \| 1000 images\/s \| 10\.0× \|/);
  assert.match(md, /\| chest \| 8 \| 200 images\/s \| 5000 images\/s \| 25\.0× \|/);
  assert.match(
    md,
    /cuda: nodes executed 40 on CUDAExecutionProvider, 1 on CPUExecutionProvider; Conv nodes elsewhere: 0/,
  );
  assert.match(md, /CUDA vs CPU: logits max \|Δ\| 1\.00e-3/);
  assert.match(md, /GPU memory used: 2048 MiB above the 500 MiB in use before \(peak 2548 MiB\)/);
});

test('brain helpers: argmax agreement over the class axis; a NIfTI volume min–max scaled and centre-cropped', async () => {
  // Two voxels, three classes, laid out [C, voxels]: voxel 0 → class 2 in both; voxel 1 → 1 vs 0.
  const a = Float32Array.from([0, 0, 0, 5, 1, 1]);
  const b = Float32Array.from([0, 9, 0, 5, 1, 1]);
  assert.equal(argmaxAgreement(a, a, 3), 1);
  assert.equal(argmaxAgreement(a, b, 3), 0.5);

  const header = Buffer.alloc(352);
  header.writeInt32LE(348, 0);
  [3, 4, 4, 4].forEach((v, i) => header.writeInt16LE(v, 40 + 2 * i));
  header.writeInt16LE(2, 70); // uint8
  header.writeFloatLE(352, 108);
  const voxels = Buffer.from(Array.from({ length: 64 }, (_, i) => 10 + i)); // x fastest
  const file = path.join(dir, 'vol.nii.gz');
  await writeFile(file, gzipSync(Buffer.concat([header, voxels])));
  const full = await loadVolume(file, [4, 4, 4]);
  assert.equal(full[0], 0);
  assert.equal(full[63], 1);
  const centre = await loadVolume(file, [2, 2, 2]);
  // x, y, z in 1..2: voxel (1,1,1) has index 1 + 4 + 16 = 21, value (21 - 0) / 63.
  assert.ok(Math.abs(centre[0]! - 21 / 63) < 1e-6);
  assert.ok(Math.abs(centre[7]! - (2 + 8 + 32) / 63) < 1e-6);
});
