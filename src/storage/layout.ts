// The folders under <dataDir> besides the object store's (spool/, outbox/: storage/filesystem-store.ts),
// named once for the roles that write them and for retention, which cleans them.

/** The built-in folder destination writes here, per study. */
export const RESULTS_DIR = 'results';
