/** Raised by withDeadline when the work did not settle in time; the work itself is not cancelled. */
export class DeadlineError extends Error {
  override name = 'DeadlineError';
  constructor(what: string, ms: number) {
    super(`${what}: no result within ${ms} ms`);
  }
}

/** Settles like `work`, or rejects with DeadlineError after `ms` (the timer never holds the process open). */
export function withDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineError(what, ms)), ms);
    timer.unref();
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}
