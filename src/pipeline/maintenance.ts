// Cluster-wide maintenance, run by the one gateway that holds the maintenance lease (maintenance-lease.ts).
// With several gateways sharing one Redis and one store, each of these would otherwise run N times over the
// same data, and two retention passes could retire the same study at once:
// - retention (retention.ts) of the shared spool, outbox, results, study records and failed jobs;
// - the periodic spool reconcile (reconcile.ts), and the one after a Redis outage (run as soon as a gateway
//   takes the lease, since the gateway that held it during the outage lost it);
// - the sweep of abandoned temp/staging files (older than spool.staleTempAfterMs) of the shared spool;
// - pruning of dead workers' heartbeat entries (the inference stage's function, injected).
// What stays per node, on every gateway, without the lease (roles/gateway.ts): the start-up sweep of
// abandoned temp files and the start-up reconcile of its spool before it accepts anything, and the pruning
// of its own audit segments. Losing the lease aborts retention before its next study; a reconcile pass
// already running finishes (it only re-indexes files that are on disk: idempotent).
import { scheduleRetention, type RetentionDeps } from './retention.ts';
import { startSpoolReconciler, type SpoolReconcilerOptions } from './reconcile.ts';
import { pipelineEvents } from './events.ts';
import type { MaintenanceStart } from './maintenance-lease.ts';

export interface ClusterMaintenanceDeps {
  retention: Omit<RetentionDeps, 'now' | 'afterRecheck' | 'signal'>;
  retentionIntervalMs: number;
  reconcile: Omit<SpoolReconcilerOptions, 'passAtStart'>;
  /** Deletes abandoned temp/staging files of the shared spool; returns how many. */
  sweepTemp: () => Promise<number>;
  /** Removes heartbeat entries of workers dead for long (the inference stage's pruneDeadWorkers). */
  pruneWorkers: () => Promise<unknown>;
  /** How often the temp sweep and the heartbeat pruning run. */
  sweepIntervalMs: number;
}

/** What the lease holder starts; stopping it (lease lost, released) ends every part. */
export function clusterMaintenance(deps: ClusterMaintenanceDeps): MaintenanceStart {
  return (signal) => {
    const stopRetention = scheduleRetention({ ...deps.retention, signal }, deps.retentionIntervalMs);
    const stopReconciler = startSpoolReconciler({ ...deps.reconcile, passAtStart: true });
    let sweeping: Promise<void> | undefined;
    const sweep = () => {
      if (sweeping || signal.aborted) return;
      sweeping = (async () => {
        await deps
          .sweepTemp()
          .catch((err: unknown) => pipelineEvents.maintenanceStepFailed('temp-sweep', err));
        if (signal.aborted) return;
        await deps
          .pruneWorkers()
          .catch((err: unknown) => pipelineEvents.maintenanceStepFailed('worker-prune', err));
      })().finally(() => {
        sweeping = undefined;
      });
    };
    sweep();
    const timer = setInterval(sweep, deps.sweepIntervalMs);
    timer.unref();
    return async () => {
      clearInterval(timer);
      stopRetention();
      await stopReconciler();
      await sweeping;
    };
  };
}
