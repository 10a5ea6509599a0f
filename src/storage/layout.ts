// The folders under <dataDir> besides the spool, named once for the roles that write them and for
// retention, which cleans them.

/** SRs and SEGs wait here, per study, until every delivery of them has landed. */
export const OUTBOX_DIR = 'outbox';
/** The built-in folder destination writes here, per study. */
export const RESULTS_DIR = 'results';
