// Named log events of the process as a whole (start-up and shutdown, from roles/ and cli.ts): one
// function per event, so every line has the same fields. Roles, ports and signals only.
import { errorMessage } from '../observability/error-message.ts';
import { log } from '../observability/log.ts';

const processLog = log.child({ component: 'process' });

export const processEvents = {
  started(fields: { role: string; aeTitle: string; dimsePort: number; httpPort: number }): void {
    processLog.info({ event: 'process.started', ...fields }, 'dicom-ai-gateway started');
  },
  /** Start-up failed for a reason other than configuration or Redis; the error is kept, stack included. */
  startupFailed(err: unknown): void {
    processLog.fatal({ event: 'process.startup.failed', err }, 'failed to start');
  },
  shutdown(signal: string): void {
    processLog.info({ event: 'process.shutdown', signal }, 'shutting down');
  },
  shutdownError(step: string, err: unknown): void {
    processLog.error(
      { event: 'process.shutdown.error', step, err: errorMessage(err) },
      'error while closing',
    );
  },
  shutdownForced(signal: string, reason: string): void {
    processLog.error(
      { event: 'process.shutdown.forced', signal, reason },
      'shutdown did not finish: exiting now',
    );
  },
};
