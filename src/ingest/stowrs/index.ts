export { createStowRouter, type StowRouterOptions } from './router.ts';
export type { StowAuth } from './auth.ts';
