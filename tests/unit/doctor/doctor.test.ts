import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { formatReport, hasKernelsFor, runDoctor, type DoctorReport } from '../../../src/doctor/doctor.ts';
import { parseKernelModuleVersion, parseSmi, versionAtLeast } from '../../../src/doctor/driver.ts';
import { ElfError, findStrings, readGpuArchitectures, readNeeded } from '../../../src/doctor/elf.ts';
import type { ExecResult, Host } from '../../../src/doctor/host.ts';
import { locateLibraries } from '../../../src/doctor/libraries.ts';
import { cudaMajorOf, gpuDependencies, locateOrt, ortVersionOf } from '../../../src/doctor/ort-install.ts';
import { explainOrtLog, type ProbeResult } from '../../../src/doctor/probe.ts';
import { fakeCudaProvider, fakeElf, fakeOrtPackage } from '../../helpers/fake-elf.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'doctor-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A host under a fresh root: files written through `put`, programs answering from `programs`. */
async function fakeHost(
  name: string,
  env: NodeJS.ProcessEnv = {},
  programs: Record<string, ExecResult> = {},
): Promise<Host & { put(p: string, data?: string | Buffer): Promise<void>; calls: string[] }> {
  const root = path.join(dir, name);
  await mkdir(root, { recursive: true });
  const calls: string[] = [];
  return {
    root,
    env,
    calls,
    exec: async (cmd, args) => {
      calls.push([cmd, ...args].join(' '));
      return programs[cmd] ?? null;
    },
    put: async (p, data = 'x') => {
      await mkdir(path.dirname(path.join(root, p)), { recursive: true });
      await writeFile(path.join(root, p), data);
    },
  };
}

const H200_SMI = '0, NVIDIA H200, 580.95.05, 143771, 512, 9.0\n';
const PROC_VERSION =
  'NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U16-I3-B03-4-3)\nGCC version:  gcc version 12.2.0\n';
const CUDA13_LIBS = ['libcudart.so.13', 'libcublas.so.13', 'libcublasLt.so.13', 'libcurand.so.10'];

test('ELF: DT_NEEDED, fat-binary architectures and the version string of a library', async () => {
  const file = path.join(dir, 'provider.so');
  await writeFile(file, fakeCudaProvider('1.29.0'));
  assert.deepEqual(await readNeeded(file), [
    'libcublasLt.so.13',
    'libcublas.so.13',
    'libcurand.so.10',
    'libcudart.so.13',
    'libcuda.so.1',
    'libc.so.6',
  ]);
  assert.deepEqual(await readGpuArchitectures(file), { cubin: [75, 80, 86, 89, 90, 120], ptx: [] });
  assert.equal(await ortVersionOf(file), '1.29.0'); // 1.3.9 (another library's version) is not ORT's
  const plain = path.join(dir, 'plain.so');
  await writeFile(plain, fakeElf({ needed: ['libc.so.6'], strings: ['1.28.1', '1.29.0'] }));
  assert.equal(await readGpuArchitectures(plain), null);
  assert.equal(await ortVersionOf(plain), null, 'two candidate versions: cannot tell');
  const text = path.join(dir, 'text.so');
  await writeFile(text, 'not an ELF file at all, just text');
  await assert.rejects(readNeeded(text), ElfError);
});

test('ELF: the real onnxruntime-node core library names its own release', async () => {
  const ort = await locateOrt();
  const core = path.join(ort.binDir, 'libonnxruntime.so.1');
  assert.equal(await ortVersionOf(core), ort.version);
  const needed = await readNeeded(core);
  assert.ok(needed.includes('libc.so.6') && needed.includes('libstdc++.so.6'), needed.join(', '));
  assert.deepEqual(gpuDependencies(needed), []);
  const version = JSON.parse(
    await readFile(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'), 'utf8'),
  ).version;
  assert.equal(ort.version, version);
});

test('findStrings sees a string cut by its 8 MiB read boundary, and no fragments of it', async () => {
  const file = path.join(dir, 'big.bin'); // not ELF: the whole file is scanned
  const size = (8 << 20) + 4096;
  const buf = Buffer.alloc(size, 0x41);
  const at = (8 << 20) - 3; // "1.29.0" straddles the first chunk's end
  buf[at - 1] = 0;
  buf.write('1.29.0', at, 'latin1');
  buf[at + 6] = 0;
  await writeFile(file, buf);
  assert.deepEqual(await findStrings(file, /1\.\d+\.\d+/), ['1.29.0']);
  assert.deepEqual(await findStrings(file, /\d+\.\d+/), [], 'no fragment such as "9.0" is reported');
});

test('provider dependencies, CUDA major, kernel compatibility', () => {
  const needed = [
    'libcublas.so.13',
    'libcudart.so.13',
    'libc.so.6',
    'libstdc++.so.6',
    'ld-linux-x86-64.so.2',
  ];
  assert.deepEqual(gpuDependencies(needed), ['libcublas.so.13', 'libcudart.so.13']);
  assert.equal(cudaMajorOf(needed), 13);
  assert.equal(cudaMajorOf(['libc.so.6']), null);
  const asus4 = { cubin: [75, 80, 86, 89, 90, 120], ptx: [] };
  assert.equal(hasKernelsFor(asus4, 90), true); // H100/H200
  assert.equal(hasKernelsFor(asus4, 87), true); // sm_86 SASS runs on 8.7
  assert.equal(hasKernelsFor(asus4, 100), false); // B200: no sm_100 SASS and no PTX
  assert.equal(hasKernelsFor(asus4, 70), false); // V100
  assert.equal(hasKernelsFor({ cubin: [], ptx: [90] }, 100), true); // PTX is JIT-compiled forward
});

test('driver: /proc version, nvidia-smi CSV, version comparison', () => {
  assert.equal(parseKernelModuleVersion(PROC_VERSION), '580.95.05');
  assert.equal(
    parseKernelModuleVersion('NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun'),
    '535.183.01',
  );
  assert.equal(parseKernelModuleVersion('garbage'), null);
  assert.deepEqual(parseSmi(H200_SMI + '1, NVIDIA L4, 580.95.05, 23034, 0, 8.9\nNo devices were found\n'), [
    {
      index: 0,
      name: 'NVIDIA H200',
      driverVersion: '580.95.05',
      memoryTotalMiB: 143771,
      memoryUsedMiB: 512,
      computeCapability: 90,
    },
    {
      index: 1,
      name: 'NVIDIA L4',
      driverVersion: '580.95.05',
      memoryTotalMiB: 23034,
      memoryUsedMiB: 0,
      computeCapability: 89,
    },
  ]);
  assert.equal(versionAtLeast('580.95.05', '580.65.06'), true);
  assert.equal(versionAtLeast('580.65.06', '580.65.06'), true);
  assert.equal(versionAtLeast('575.64', '580.65.06'), false);
});

test('libraries: LD_LIBRARY_PATH, the ldconfig cache (stale entries ignored), default folders, wheels', async () => {
  const ldconfig = {
    code: 0,
    stdout: [
      '4 libs found in cache `/etc/ld.so.cache`',
      '\tlibcublas.so.13 (libc6,x86-64) => /usr/local/cuda-13.0/lib/libcublas.so.13',
      '\tlibcurand.so.10 (libc6,x86-64) => /usr/local/cuda-13.0/lib/libcurand.so.10',
      '\tlibcurand.so.10 (libc6) => /usr/lib32/libcurand.so.10',
    ].join('\n'),
    stderr: '',
  };
  const host = await fakeHost(
    'libs',
    { LD_LIBRARY_PATH: '/opt/a::/opt/cudart', HOME: '/home/u' },
    { ldconfig },
  );
  await host.put('/opt/cudart/libcudart.so.13');
  await host.put('/usr/local/cuda-13.0/lib/libcublas.so.13'); // libcurand's cache entry is stale
  await host.put('/usr/lib/x86_64-linux-gnu/libcuda.so.1');
  await host.put('/home/u/.local/lib/python3.12/site-packages/nvidia/cu13/lib/libcurand.so.10');
  await host.put('/home/u/.local/lib/python3.12/site-packages/nvidia/cudnn/lib/libcudnn.so.9');
  const found = await locateLibraries(host, [
    ...CUDA13_LIBS.slice(0, 2),
    'libcurand.so.10',
    'libcuda.so.1',
    'libcudnn.so.9',
    'libcublasLt.so.13',
  ]);
  const by = new Map(found.map((l) => [l.soname, l]));
  assert.deepEqual(by.get('libcudart.so.13')!.loader, {
    path: '/opt/cudart/libcudart.so.13',
    via: 'LD_LIBRARY_PATH',
  });
  assert.deepEqual(by.get('libcublas.so.13')!.loader, {
    path: '/usr/local/cuda-13.0/lib/libcublas.so.13',
    via: 'ldconfig',
  });
  assert.deepEqual(by.get('libcuda.so.1')!.loader, {
    path: '/usr/lib/x86_64-linux-gnu/libcuda.so.1',
    via: 'default folder',
  });
  assert.equal(by.get('libcurand.so.10')!.loader, undefined);
  assert.deepEqual(by.get('libcurand.so.10')!.elsewhere, [
    '/home/u/.local/lib/python3.12/site-packages/nvidia/cu13/lib',
  ]);
  assert.deepEqual(by.get('libcudnn.so.9')!.elsewhere, [
    '/home/u/.local/lib/python3.12/site-packages/nvidia/cudnn/lib',
  ]);
  assert.deepEqual(by.get('libcublasLt.so.13'), {
    soname: 'libcublasLt.so.13',
    loader: undefined,
    elsewhere: [],
  });
});

/** A fake onnxruntime-node with the CUDA provider of `providerVersion` (none when null). */
async function ortWith(name: string, providerVersion: string | null): Promise<string> {
  const pkg = path.join(dir, name, 'onnxruntime-node');
  const bin = await fakeOrtPackage(pkg, '1.29.0');
  if (providerVersion) {
    await writeFile(path.join(bin, 'libonnxruntime_providers_cuda.so'), fakeCudaProvider(providerVersion));
    await writeFile(path.join(bin, 'libonnxruntime_providers_shared.so'), fakeElf({ needed: ['libc.so.6'] }));
  }
  return pkg;
}

function statusOf(report: DoctorReport, id: string): string | undefined {
  return report.checks.find((c) => c.id === id)?.status;
}

test('doctor on a CPU-only host: driver, GPU, provider and libraries missing; the probe error is shown', async () => {
  const host = await fakeHost('cpu-only');
  const probes: string[] = [];
  const probe = async (ortDir: string, model: string): Promise<ProbeResult> => {
    probes.push(`${ortDir} ${model}`);
    return {
      bound: false,
      error: 'OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library',
      details: [
        'Failed to load library …/libonnxruntime_providers_shared.so with error: cannot open shared object file',
      ],
    };
  };
  const ortDir = await ortWith('cpu-only-ort', null);
  const report = await runDoctor({ host, deviceId: 0, ortDir, probe, modelPath: '/m.onnx' });
  assert.equal(report.cudaUsable, false);
  assert.deepEqual(probes, [`${ortDir} /m.onnx`]);
  assert.equal(statusOf(report, 'driver'), 'missing');
  assert.equal(statusOf(report, 'gpu'), 'missing');
  assert.equal(statusOf(report, 'onnxruntime'), 'ok');
  assert.equal(statusOf(report, 'provider'), 'missing');
  for (const lib of [...CUDA13_LIBS, 'libcuda.so.1', 'libcudnn.so.9'])
    assert.equal(statusOf(report, `library:${lib}`), 'missing', lib);
  assert.equal(statusOf(report, 'session'), 'missing');
  const text = formatReport(report);
  assert.match(text, /\[MISSING\] NVIDIA driver: not found/);
  assert.match(text, /nvidia-smi is not installed/);
  assert.match(text, /install-cuda-provider\.ts --online/);
  assert.match(text, /cannot open shared object file/);
  assert.match(text, /CUDA does NOT bind here/);
  assert.deepEqual(report.addToLdLibraryPath, []);
});

test('doctor on a GPU host whose CUDA libraries come from nvidia-* wheels: the LD_LIBRARY_PATH to set', async () => {
  const smi = { code: 0, stdout: H200_SMI, stderr: '' };
  const venv = '/srv/venv';
  const host = await fakeHost('wheels', { VIRTUAL_ENV: venv }, { 'nvidia-smi': smi });
  await host.put('/proc/driver/nvidia/version', PROC_VERSION);
  await host.put('/usr/lib/x86_64-linux-gnu/libcuda.so.1');
  const cu13 = `${venv}/lib/python3.11/site-packages/nvidia/cu13/lib`;
  const cudnn = `${venv}/lib/python3.11/site-packages/nvidia/cudnn/lib`;
  for (const lib of CUDA13_LIBS) await host.put(`${cu13}/${lib}`);
  await host.put(`${cudnn}/libcudnn.so.9`);
  const ortDir = await ortWith('wheels-ort', '1.29.0');
  const probe = async (): Promise<ProbeResult> => ({
    bound: false,
    error: 'Failed to load shared library',
    details: ['libcublasLt.so.13: cannot open shared object file'],
  });

  const report = await runDoctor({ host, deviceId: 0, ortDir, probe });
  assert.equal(statusOf(report, 'driver'), 'ok');
  assert.equal(statusOf(report, 'gpu'), 'ok');
  assert.equal(statusOf(report, 'provider'), 'ok');
  assert.equal(statusOf(report, 'library:libcuda.so.1'), 'ok');
  assert.equal(statusOf(report, 'library:libcublasLt.so.13'), 'missing');
  assert.deepEqual(report.addToLdLibraryPath, [cu13, cudnn]);
  const text = formatReport(report);
  assert.match(text, /GPU 0: NVIDIA H200/);
  assert.match(text, /compute capability 9\.0/);
  assert.match(text, /CUDA execution provider 1\.29\.0/);
  assert.match(text, /GPU kernels for sm_75, sm_80, sm_86, sm_89, sm_90, sm_120/);
  assert.match(text, /libcublasLt\.so\.13 is installed but the loader cannot find it/);
  assert.ok(
    text.includes(`export LD_LIBRARY_PATH=${cu13}:${cudnn}${'${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}'}`),
    text,
  );

  // The same host with LD_LIBRARY_PATH set as advised, and a probe that binds: all green.
  host.env.LD_LIBRARY_PATH = `${cu13}:${cudnn}`;
  const ready = await runDoctor({
    host,
    deviceId: 0,
    ortDir,
    probe: async () => ({ bound: true, details: [] }),
  });
  assert.equal(ready.cudaUsable, true);
  assert.deepEqual(
    ready.checks.filter((c) => c.status !== 'ok').map((c) => c.title),
    [],
  );
  assert.deepEqual(ready.addToLdLibraryPath, []);
  assert.match(formatReport(ready), /Verdict: CUDA binds on device 0/);
});

test('doctor: old driver, missing device id, GPU without kernels, provider of another release', async () => {
  const smi = { code: 0, stdout: '0, NVIDIA B200, 535.183.01, 183359, 0, 10.0\n', stderr: '' };
  const host = await fakeHost('mismatch', {}, { 'nvidia-smi': smi });
  const noProbe = async (): Promise<ProbeResult> => ({ bound: false, details: [] });
  const ortDir = await ortWith('mismatch-ort', '1.30.0');
  const report = await runDoctor({ host, deviceId: 0, ortDir, probe: noProbe });
  const title = (id: string) => report.checks.find((c) => c.id === id)!.title;
  assert.equal(statusOf(report, 'driver'), 'missing');
  assert.match(title('driver'), /535\.183\.01: too old for CUDA 13/);
  assert.equal(statusOf(report, 'gpu'), 'missing');
  assert.match(title('gpu'), /NVIDIA B200 has no kernels/);
  assert.equal(statusOf(report, 'provider'), 'missing');
  assert.match(title('provider'), /ONNX Runtime 1\.30\.0, not 1\.29\.0/);

  const other = await runDoctor({ host, deviceId: 3, ortDir, probe: noProbe });
  assert.match(other.checks.find((c) => c.id === 'gpu')!.title, /GPU 3: not found/);

  const failing = await fakeHost(
    'smi-fails',
    {},
    {
      'nvidia-smi': {
        code: 9,
        stdout: "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
        stderr: '',
      },
    },
  );
  const broken = await runDoctor({ host: failing, deviceId: 0, ortDir, probe: noProbe });
  assert.match(formatReport(broken), /nvidia-smi failed: NVIDIA-SMI has failed/);
});

test('probe: ORT log lines reduced to their cause', () => {
  const stderr =
    '\x1b[1;31m2026-11-29 07:19:29.27 [E:onnxruntime:onnxruntime-node, provider_bridge_ort.cc:2146 Create] /src/provider_bridge_ort.cc:1988 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library /x/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory\x1b[m\n';
  assert.deepEqual(explainOrtLog(stderr), [
    'Failed to load library /x/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory',
  ]);
  assert.deepEqual(explainOrtLog('2026-11-29 [I:onnxruntime] session created\n'), []);
});
