// The V8 flags every gateway and worker process starts with: `npm start`, `npm run worker`, the Dockerfile's
// ENTRYPOINT, and the benches and tests that launch the CLI (tests/unit/util/node-flags.test.ts checks that
// they agree).
// They cannot go in NODE_OPTIONS (Node refuses V8 heap flags there), so each launcher passes them itself.
//
// --initial-old-space-size=128: no full (mark-compact) collection while the old generation is under 128 MB.
// The gateway's long-lived heap is about 60 MB (loaded modules, tsx's source maps), and V8 left it a margin
// of only 15–25 MB, less than the 16 MB young generation that decides when marking starts: during ingest it
// marked almost without pause, about one mark-compact per 10–20 instances (92 in a 50 s bench run, each
// 25–40 ms of CPU and main-thread steps of up to 15 ms that every association waited on). With the flag: one
// in the same run, CPU per instance 7–9 ms → 4–5.5 ms over one association. The cost is memory: garbage up
// to 128 MB before it is collected (gateway RSS at rest 220 → 240 MiB; the 1.05 GB study's peak 250 → 275
// MiB, under the 300 MiB target). See docs/decisions.md.
export const NODE_FLAGS: readonly string[] = ['--initial-old-space-size=128'];
