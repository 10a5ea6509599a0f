// The doctor without the gateway's CLI, for bench/gpu/run.sh: src/cli.ts loads every role's
// dependencies, while this needs only onnxruntime-node, so the GPU proof can run from the small
// bundle bench/gpu/pack-for-device.sh makes. Same checks, same exit codes (0: CUDA binds).
import { formatReport, runDoctor } from '../../src/doctor/doctor.ts';
import { realHost } from '../../src/doctor/host.ts';

const json = process.argv.includes('--json');
const device = process.argv.indexOf('--device');
const deviceId = device > 0 ? Number(process.argv[device + 1]) : 0;
if (!Number.isInteger(deviceId) || deviceId < 0) {
  console.error('doctor: --device must be a GPU index');
  process.exit(2);
}
const report = await runDoctor({ host: realHost(), deviceId });
console.log(json ? JSON.stringify(report, null, 2) : formatReport(report));
process.exit(report.cudaUsable ? 0 : 1);
