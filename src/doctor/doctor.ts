import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorMessage } from '../observability/error-message.ts';
import { inspectDriver, MIN_DRIVER_FOR_CUDA, versionAtLeast, type DriverState } from './driver.ts';
import type { GpuArchitectures } from './elf.ts';
import type { Host } from './host.ts';
import { describeLibrary, locateLibraries, type LibraryLocation } from './libraries.ts';
import { inspectProvider, locateOrt, type ProviderState } from './ort-install.ts';
import { probeCuda, type ProbeResult } from './probe.ts';

// `dicom-ai-gateway doctor`: what stands between this machine and a worker that runs on the GPU. Each
// check says what it found in plain words and, when something is missing, how to fix it; the last
// check creates a real CUDA session and reports ORT's own error. CUDA is usable only if that binds.

export type CheckStatus = 'ok' | 'missing' | 'warning';

export interface Check {
  id: string;
  status: CheckStatus;
  title: string;
  /** What was found. */
  detail: string[];
  /** What to do about it. */
  fix?: string;
}

export interface DoctorReport {
  /** True when a session with the CUDA provider was created. */
  cudaUsable: boolean;
  deviceId: number;
  checks: Check[];
  /** Folders to add to LD_LIBRARY_PATH so the loader finds the libraries found off its path. */
  addToLdLibraryPath: string[];
}

export interface DoctorOptions {
  host: Host;
  deviceId: number;
  /** onnxruntime-node folder (default: the one this project resolves). */
  ortDir?: string;
  /** Model used for the CUDA session probe. */
  modelPath?: string;
  probe?: (ortDir: string, modelPath: string, deviceId: number) => Promise<ProbeResult>;
}

export const PROBE_MODEL = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../models/image-uniformity/model.onnx',
);

/** The CUDA major version the documented provider (ONNX Runtime 1.29.0 from the asus4 package) needs. */
const SUPPORTED_CUDA_MAJOR = 13;
const CUDNN = 'libcudnn.so.9';
const DEFAULT_GPU_LIBRARIES = [
  'libcudart.so.13',
  'libcublas.so.13',
  'libcublasLt.so.13',
  'libcurand.so.10',
  'libcuda.so.1',
];

function driverChecks(
  driver: DriverState,
  cudaMajor: number,
  deviceId: number,
  arch: GpuArchitectures | null,
) {
  const checks: Check[] = [];
  const minDriver = MIN_DRIVER_FOR_CUDA[cudaMajor];
  const installDriver = `install the NVIDIA driver${minDriver ? ` (${minDriver} or newer for CUDA ${cudaMajor})` : ''}`;
  const version = driver.kernelModule ?? driver.gpus[0]?.driverVersion ?? null;
  if (!version) {
    const smi =
      driver.smi === 'not installed'
        ? 'nvidia-smi is not installed'
        : `nvidia-smi failed: ${driver.smiError ?? 'no output'}`;
    checks.push({
      id: 'driver',
      status: 'missing',
      title: 'NVIDIA driver: not found',
      detail: [`no NVIDIA kernel module is loaded (/proc/driver/nvidia/version is absent); ${smi}`],
      fix: `${installDriver}; in a container, run it with the GPU passed through (docker --gpus all)`,
    });
  } else if (minDriver && !versionAtLeast(version, minDriver)) {
    checks.push({
      id: 'driver',
      status: 'missing',
      title: `NVIDIA driver ${version}: too old for CUDA ${cudaMajor}`,
      detail: [`CUDA ${cudaMajor} needs driver ${minDriver} or newer`],
      fix: installDriver,
    });
  } else {
    checks.push({ id: 'driver', status: 'ok', title: `NVIDIA driver ${version}`, detail: [] });
  }

  const gpu = driver.gpus.find((g) => g.index === deviceId);
  if (!gpu) {
    const seen = driver.gpus.map((g) => `GPU ${g.index}: ${g.name}`).join(', ') || 'none';
    checks.push({
      id: 'gpu',
      status: 'missing',
      title: `GPU ${deviceId}: not found`,
      detail: [`GPUs nvidia-smi reports: ${seen}`],
      fix: driver.gpus.length > 0 ? `set worker.deviceId to one of the listed GPUs` : undefined,
    });
    return checks;
  }
  const cc = gpu.computeCapability;
  const ccText =
    cc === null ? 'compute capability unknown' : `compute capability ${Math.floor(cc / 10)}.${cc % 10}`;
  const detail = [
    `${gpu.memoryTotalMiB} MiB memory (${gpu.memoryUsedMiB} MiB in use), ${ccText}`,
    ...driver.gpus.filter((g) => g !== gpu).map((g) => `also GPU ${g.index}: ${g.name}`),
  ];
  if (cc !== null && arch && !hasKernelsFor(arch, cc)) {
    checks.push({
      id: 'gpu',
      status: 'missing',
      title: `GPU ${deviceId}: ${gpu.name} has no kernels in the installed CUDA provider`,
      detail: [...detail, `the provider has kernels for ${archList(arch)}; this GPU is sm_${cc}`],
      fix: 'use a CUDA provider built for this GPU architecture',
    });
  } else {
    checks.push({ id: 'gpu', status: 'ok', title: `GPU ${deviceId}: ${gpu.name}`, detail });
  }
  return checks;
}

/** SASS runs on GPUs of the same major architecture and an equal or higher minor; PTX on any newer. */
export function hasKernelsFor(arch: GpuArchitectures, cc: number): boolean {
  return (
    arch.cubin.some((c) => Math.floor(c / 10) === Math.floor(cc / 10) && c <= cc) ||
    arch.ptx.some((p) => p <= cc)
  );
}

function archList(arch: GpuArchitectures): string {
  const parts = arch.cubin.map((c) => `sm_${c}`);
  if (arch.ptx.length > 0) parts.push(`PTX ${arch.ptx.map((p) => `compute_${p}`).join(', ')}`);
  return parts.join(', ') || 'no architecture';
}

function ortChecks(state: ProviderState): Check[] {
  const { ort } = state;
  const checks: Check[] = [];
  const coreOk = state.coreVersion === ort.version;
  checks.push({
    id: 'onnxruntime',
    status: coreOk ? 'ok' : 'warning',
    title: `onnxruntime-node ${ort.version}`,
    detail: [
      `at ${ort.dir}`,
      `core library: ${state.coreVersion ?? 'version unreadable'}${coreOk ? '' : ` (package.json says ${ort.version})`}`,
    ],
  });
  const missing = state.files.filter((f) => !f.present).map((f) => f.name);
  const install = 'npx tsx scripts/install-cuda-provider.ts --online (or --from FILE on an offline host)';
  if (missing.length > 0) {
    checks.push({
      id: 'provider',
      status: 'missing',
      title: 'CUDA execution provider: not installed',
      detail: [`missing from ${ort.binDir}: ${missing.join(', ')}`],
      fix: install,
    });
  } else if (state.providerVersion !== ort.version) {
    checks.push({
      id: 'provider',
      status: 'missing',
      title: `CUDA execution provider: ONNX Runtime ${state.providerVersion ?? 'of unknown version'}, not ${ort.version}`,
      detail: ['the provider and the core library must come from the same ONNX Runtime release'],
      fix: `${install}, or install onnxruntime-node@${state.providerVersion ?? '<the provider version>'}`,
    });
  } else {
    const cuda = state.files[0]!;
    checks.push({
      id: 'provider',
      status: 'ok',
      title: `CUDA execution provider ${state.providerVersion}`,
      detail: [
        `${cuda.name}: ${cuda.bytes} bytes, built for CUDA ${state.cudaMajor ?? '?'}`,
        ...(state.architectures ? [`GPU kernels for ${archList(state.architectures)}`] : []),
      ],
    });
  }
  for (const e of state.errors)
    checks.push({ id: 'provider-read', status: 'warning', title: 'could not read', detail: [e] });
  return checks;
}

function libraryChecks(libs: LibraryLocation[], fromProvider: boolean): Check[] {
  return libs.map((lib) => {
    const what = describeLibrary(lib.soname);
    const id = `library:${lib.soname}`;
    if (lib.loader) {
      return {
        id,
        status: 'ok' as const,
        title: `${what}: ${lib.soname}`,
        detail: [`found via ${lib.loader.via}: ${lib.loader.path}`],
      };
    }
    const needs = fromProvider
      ? 'the installed CUDA provider needs it'
      : `the CUDA ${SUPPORTED_CUDA_MAJOR} provider needs it`;
    if (lib.elsewhere.length > 0) {
      return {
        id,
        status: 'missing' as const,
        title: `${what}: ${lib.soname} is installed but the loader cannot find it`,
        detail: [`${needs}; it is in ${lib.elsewhere.join(', ')}`],
        fix: `add ${lib.elsewhere[0]} to LD_LIBRARY_PATH (see below)`,
      };
    }
    return {
      id,
      status: 'missing' as const,
      title: `${what}: ${lib.soname} not found`,
      detail: [
        `${needs}; it is not on LD_LIBRARY_PATH, in the ldconfig cache, nor in an nvidia-* Python wheel`,
      ],
      fix: lib.soname.startsWith('libcuda.so')
        ? 'install the NVIDIA driver'
        : `install CUDA ${SUPPORTED_CUDA_MAJOR} and cuDNN 9 (the toolkit, or pip install torch, whose nvidia-* wheels bring them)`,
    };
  });
}

export async function runDoctor(opts: DoctorOptions): Promise<DoctorReport> {
  const { host, deviceId } = opts;
  const checks: Check[] = [];
  let state: ProviderState | null = null;
  try {
    state = await inspectProvider(await locateOrt(opts.ortDir));
  } catch (err) {
    checks.push({
      id: 'onnxruntime',
      status: 'missing',
      title: 'onnxruntime-node: not usable',
      detail: [errorMessage(err)],
      fix: 'ONNXRUNTIME_NODE_INSTALL=skip npm ci',
    });
  }
  const cudaMajor = state?.cudaMajor ?? SUPPORTED_CUDA_MAJOR;
  checks.push(...driverChecks(await inspectDriver(host), cudaMajor, deviceId, state?.architectures ?? null));
  if (state) checks.push(...ortChecks(state));

  const fromProvider = (state?.dependencies.length ?? 0) > 0;
  const sonames = [...(fromProvider ? state!.dependencies : DEFAULT_GPU_LIBRARIES), CUDNN];
  const libs = await locateLibraries(host, [...new Set(sonames)]);
  checks.push(...libraryChecks(libs, fromProvider));
  const addToLdLibraryPath = [
    ...new Set(libs.filter((l) => !l.loader && l.elsewhere.length > 0).map((l) => l.elsewhere[0]!)),
  ];

  let cudaUsable = false;
  if (state) {
    const model = opts.modelPath ?? PROBE_MODEL;
    const result = await (opts.probe ?? probeCuda)(state.ort.dir, model, deviceId);
    cudaUsable = result.bound;
    checks.push(
      result.bound
        ? {
            id: 'session',
            status: 'ok',
            title: `CUDA session: bound on device ${deviceId}`,
            detail: [`model ${model}`],
          }
        : {
            id: 'session',
            status: 'missing',
            title: 'CUDA session: failed',
            detail: [
              `InferenceSession.create(['cuda']) on ${model}: ${result.error ?? 'unknown error'}`,
              ...result.details,
            ],
          },
    );
  }
  return { cudaUsable, deviceId, checks, addToLdLibraryPath };
}

/** The report in plain words, one line per finding. */
export function formatReport(report: DoctorReport): string {
  const tag: Record<CheckStatus, string> = { ok: '[ok]     ', missing: '[MISSING]', warning: '[warning]' };
  const lines = ['GPU readiness (CUDA execution provider):', ''];
  for (const c of report.checks) {
    lines.push(`${tag[c.status]} ${c.title}`);
    for (const d of c.detail) lines.push(`          ${d}`);
    if (c.fix) lines.push(`          fix: ${c.fix}`);
  }
  if (report.addToLdLibraryPath.length > 0) {
    lines.push('', 'Set before starting the worker (the loader reads it at process start):');
    lines.push(
      `  export LD_LIBRARY_PATH=${report.addToLdLibraryPath.join(':')}` +
        '${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}',
    );
  }
  lines.push(
    '',
    report.cudaUsable
      ? `Verdict: CUDA binds on device ${report.deviceId}; workers with executionProviders [cuda, cpu] will use the GPU.`
      : 'Verdict: CUDA does NOT bind here. Workers fall back to the CPU provider (strict workers refuse to start).',
  );
  return lines.join('\n');
}
