#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config/load.ts';
import { redactSecrets } from './config/redact.ts';
import { RedisUnavailableError } from './pipeline/redis.ts';
import { explainRoutingCommand } from './roles/explain-routing.ts';
import { processEvents } from './roles/events.ts';
import { startRoles, type Role } from './roles/start.ts';
import { checkModels } from './inference/check-models.ts';
import { doctorCommand } from './doctor/command.ts';

const USAGE = `Usage: dicom-ai-gateway <command> [--config FILE]

Commands:
  all            gateway and worker in one process (the zero-config default)
  gateway        DIMSE/STOW-RS ingest, study assembly, routing, delivery, admin HTTP
  worker         inference worker (one per GPU)
  config check   validate the configuration and print the effective settings
  models check   validate every model manifest against its ONNX file
  routing explain [FILE|DIR ...] [--study UID] [--calling-ae AE] [--json]
                 dry run: which models would run on these files (or a spooled study), and why not
  doctor         what is missing for the GPU (driver, CUDA libraries, provider); exit 0 when CUDA binds
                 [--device N] [--json]

Options:
  --config FILE  YAML configuration (or GATEWAY_CONFIG); environment variables override it
  -h, --help     this text`;

/** SIGTERM/SIGINT end the process within this long, closed cleanly or not. */
const SHUTDOWN_DEADLINE_MS = 10_000;

function forceExit(signal: string, reason: string): void {
  processEvents.shutdownForced(signal, reason);
  process.exit(1);
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      json: { type: 'boolean' },
      device: { type: 'string' },
      study: { type: 'string' },
      'calling-ae': { type: 'string' },
    },
  });
  const [command, sub] = positionals;
  if (values.help || !command) {
    console.log(USAGE);
    return command || values.help ? 0 : 2;
  }
  if (command === 'doctor') {
    return doctorCommand({ json: values.json, device: values.device, configPath: values.config });
  }
  const config = loadConfig({ configPath: values.config });

  if (command === 'config' && sub === 'check') {
    // The output ends up in tickets and chat: never print credentials.
    console.log(JSON.stringify(redactSecrets(config), null, 2));
    return 0;
  }
  if (command === 'routing' && sub === 'explain') {
    return explainRoutingCommand(config, {
      files: positionals.slice(2),
      studyUid: values.study,
      callingAe: values['calling-ae'],
      json: values.json,
    });
  }
  if (command === 'models' && sub === 'check') {
    return (await checkModels(config.modelsDir)) ? 0 : 1;
  }
  if (command === 'all' || command === 'gateway' || command === 'worker') {
    const running = await startRoles(command as Role, config);
    let stopping = false;
    const stop = async (signal: string) => {
      if (stopping) return forceExit(signal, 'a second signal during shutdown');
      stopping = true;
      processEvents.shutdown(signal);
      // Whatever hangs (Redis gone, a peer that never answers), the process ends.
      setTimeout(
        () => forceExit(signal, `closing took longer than ${SHUTDOWN_DEADLINE_MS} ms`),
        SHUTDOWN_DEADLINE_MS,
      ).unref();
      await running.close();
      process.exit(0);
    };
    process.on('SIGINT', () => void stop('SIGINT'));
    process.on('SIGTERM', () => void stop('SIGTERM'));
    return -1;
  }
  console.error(`unknown command: ${positionals.join(' ')}\n\n${USAGE}`);
  return 2;
}

main().then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    if (err instanceof ConfigError || err instanceof RedisUnavailableError) {
      console.error(`dicom-ai-gateway: ${err.message}`);
    } else {
      processEvents.startupFailed(err);
    }
    process.exit(1);
  },
);
