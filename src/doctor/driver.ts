import { readText, type Host } from './host.ts';

// The NVIDIA kernel driver and the GPUs it sees. /proc/driver/nvidia/version exists once the kernel
// module is loaded; nvidia-smi (installed with the driver's user-space part) names the GPUs.

export interface GpuInfo {
  index: number;
  name: string;
  driverVersion: string;
  memoryTotalMiB: number;
  memoryUsedMiB: number;
  /** e.g. 90 for compute capability 9.0 (sm_90). */
  computeCapability: number | null;
}

export interface DriverState {
  /** Kernel module version from /proc (null: no NVIDIA kernel module loaded). */
  kernelModule: string | null;
  /** nvidia-smi's answer: the GPUs, or why it gave none. */
  gpus: GpuInfo[];
  smi: 'ok' | 'not installed' | 'failed';
  smiError?: string;
}

/** CUDA's minimum Linux driver per CUDA major version (minor-version compatibility). */
export const MIN_DRIVER_FOR_CUDA: Record<number, string> = { 12: '525.60.13', 13: '580.65.06' };

export function parseKernelModuleVersion(text: string): string | null {
  // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun …" or, for the open modules,
  // "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build …"
  return /Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)/.exec(text)?.[1] ?? null;
}

export const SMI_QUERY = [
  '--query-gpu=index,name,driver_version,memory.total,memory.used,compute_cap',
  '--format=csv,noheader,nounits',
];

export function parseSmi(stdout: string): GpuInfo[] {
  const gpus: GpuInfo[] = [];
  for (const line of stdout.split('\n')) {
    const f = line.split(',').map((s) => s.trim());
    if (f.length < 6 || !/^\d+$/.test(f[0]!)) continue;
    const cc = /^(\d+)\.(\d+)$/.exec(f[5]!);
    gpus.push({
      index: Number(f[0]),
      name: f[1]!,
      driverVersion: f[2]!,
      memoryTotalMiB: Number(f[3]),
      memoryUsedMiB: Number(f[4]),
      computeCapability: cc ? Number(cc[1]) * 10 + Number(cc[2]) : null,
    });
  }
  return gpus;
}

export async function inspectDriver(host: Host): Promise<DriverState> {
  const proc = await readText(host, '/proc/driver/nvidia/version');
  const kernelModule = proc === null ? null : parseKernelModuleVersion(proc);
  const smi = await host.exec('nvidia-smi', SMI_QUERY);
  if (!smi) return { kernelModule, gpus: [], smi: 'not installed' };
  if (smi.code !== 0) {
    return {
      kernelModule,
      gpus: [],
      smi: 'failed',
      smiError: (smi.stdout + smi.stderr).trim().split('\n')[0],
    };
  }
  return { kernelModule, gpus: parseSmi(smi.stdout), smi: 'ok' };
}

/** a >= b for dotted numeric versions. */
export function versionAtLeast(a: string, b: string): boolean {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? 0;
    const y = pb[i] ?? 0;
    if (x !== y) return x > y;
  }
  return true;
}
