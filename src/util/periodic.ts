/**
 * Runs task at once and then every everyMs, never two at a time (a slow pass is not stacked), with its
 * failures swallowed (the task reports its own); the timer does not keep the process alive. Returns stop.
 */
export function runEvery(everyMs: number, task: () => Promise<unknown>): () => void {
  let running: Promise<unknown> | undefined;
  const tick = () => {
    running ??= task()
      .catch(() => undefined)
      .finally(() => (running = undefined));
  };
  tick();
  const timer = setInterval(tick, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
