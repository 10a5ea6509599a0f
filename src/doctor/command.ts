import { loadConfig } from '../config/load.ts';
import { realHost } from './host.ts';
import { formatReport, runDoctor } from './doctor.ts';

// The `doctor` CLI command. It works without a valid configuration: the GPU it checks is --device,
// else worker.deviceId from the configuration when that loads, else 0.

export interface DoctorCommandOptions {
  json?: boolean;
  device?: string;
  configPath?: string;
}

/** Exit code: 0 when CUDA binds, 1 when it does not, 2 for a bad argument. */
export async function doctorCommand(opts: DoctorCommandOptions): Promise<number> {
  let deviceId = 0;
  if (opts.device !== undefined) {
    if (!/^\d+$/.test(opts.device)) {
      console.error(`doctor: --device must be a GPU index (0, 1, …), not '${opts.device}'`);
      return 2;
    }
    deviceId = Number(opts.device);
  } else {
    try {
      deviceId = loadConfig({ configPath: opts.configPath }).worker.deviceId;
    } catch {
      // A broken configuration is `config check`'s business; the GPU check still runs on device 0.
    }
  }
  const report = await runDoctor({ host: realHost(), deviceId });
  console.log(opts.json ? JSON.stringify(report, null, 2) : formatReport(report));
  return report.cudaUsable ? 0 : 1;
}
