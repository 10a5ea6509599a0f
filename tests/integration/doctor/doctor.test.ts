import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DoctorReport } from '../../../src/doctor/doctor.ts';

// `dicom-ai-gateway doctor` on this machine, through the real CLI: it inspects the real driver,
// libraries and onnxruntime-node, and really tries a CUDA session.

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const hasDriver = existsSync('/proc/driver/nvidia/version');

function doctor(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/cli.ts', 'doctor', ...args],
      { cwd: repoRoot, timeout: 180_000, env: { ...process.env, GATEWAY_CONFIG: '' } },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test('doctor --json: a report whose verdict matches the exit code; on a host without a driver, says so', async () => {
  const { code, stdout, stderr } = await doctor(['--json']);
  const report = JSON.parse(stdout) as DoctorReport;
  assert.equal(code, report.cudaUsable ? 0 : 1, stderr);
  const byId = new Map(report.checks.map((c) => [c.id, c]));
  assert.equal(byId.get('onnxruntime')?.status, 'ok');
  assert.ok(byId.has('session'), 'the CUDA session probe ran');
  if (!hasDriver) {
    assert.equal(report.cudaUsable, false);
    assert.equal(byId.get('driver')?.status, 'missing');
    assert.equal(byId.get('driver')?.title, 'NVIDIA driver: not found');
    assert.equal(byId.get('session')?.status, 'missing');
    assert.match(byId.get('session')!.detail.join('\n'), /Failed to load/);
  }
});

test('doctor (text): plain words, the verdict last; a bad --device is a usage error', async () => {
  const { code, stdout } = await doctor(['--device', '0']);
  assert.match(stdout, /^GPU readiness \(CUDA execution provider\):/);
  assert.match(stdout, /onnxruntime-node \d+\.\d+\.\d+/);
  assert.match(stdout, /Verdict: CUDA (binds on device 0|does NOT bind here)/);
  if (!hasDriver) {
    assert.equal(code, 1);
    assert.match(stdout, /\[MISSING\] NVIDIA driver: not found/);
    assert.match(stdout, /\[MISSING\] CUDA session: failed/);
  }
  const bad = await doctor(['--device', 'gpu0']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--device must be a GPU index/);
});
