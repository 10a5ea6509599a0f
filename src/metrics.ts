import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

// One registry for the process, served at /metrics. Each metric is defined once, here, so names and labels
// stay consistent across roles.
export const metrics = new Registry();
collectDefaultMetrics({ register: metrics, prefix: 'aigw_process_' });

export const instancesReceived = new Counter({
  name: 'aigw_instances_received_total',
  help: 'Instances stored in the spool, by ingest path',
  labelNames: ['path'] as const,
  registers: [metrics],
});

export const bytesReceived = new Counter({
  name: 'aigw_bytes_received_total',
  help: 'Bytes of stored instances, by ingest path',
  labelNames: ['path'] as const,
  registers: [metrics],
});

export const associations = new Counter({
  name: 'aigw_associations_total',
  help: 'DIMSE associations, by result',
  labelNames: ['result'] as const,
  registers: [metrics],
});

export const inferenceSeconds = new Histogram({
  name: 'aigw_inference_seconds',
  help: 'Model run time per job (decode, preprocess, inference), by model and execution provider',
  labelNames: ['model', 'provider'] as const,
  buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  registers: [metrics],
});

export const stageSeconds = new Histogram({
  name: 'aigw_stage_seconds',
  help: 'Time spent in each pipeline stage',
  labelNames: ['stage'] as const,
  buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800],
  registers: [metrics],
});

export const executionProvider = new Gauge({
  name: 'aigw_execution_provider',
  help: '1 for the execution provider each loaded model actually bound',
  labelNames: ['model', 'provider'] as const,
  registers: [metrics],
});

export const deliveries = new Counter({
  name: 'aigw_deliveries_total',
  help: 'Report deliveries, by destination and result',
  labelNames: ['destination', 'result'] as const,
  registers: [metrics],
});
