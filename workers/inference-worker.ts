#!/usr/bin/env node
// Process entry of one inference worker (one per GPU): the same as `dicom-ai-gateway worker [--config F]`,
// for process managers and container images that start workers by file. The worker's code lives in
// src/inference (the stage) and src/roles/worker.ts (its composition).
process.argv.splice(2, 0, 'worker');
await import('../src/cli.ts');
