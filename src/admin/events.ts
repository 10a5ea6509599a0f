// Named log events of the admin stage (console HTTP, REST API, access control): one function per event,
// so every line has the same fields. Methods, paths, principals, outcomes and reasons only, never
// patient data.
import { log } from '../observability/log.ts';

const adminLog = log.child({ component: 'admin' });

export const adminEvents = {
  listening(host: string, port: number, requestTimeoutMs: number): void {
    adminLog.info({ event: 'admin.http.listening', host, port, requestTimeoutMs }, 'admin HTTP listening');
  },
  /** An unexpected failure behind a 500; the error itself is kept, stack included. */
  httpError(method: string, path: string, err: unknown): void {
    adminLog.error({ event: 'admin.http.error', method, path, err }, 'admin API error');
  },
  crossOriginRefused(method: string, path: string, origin: string | undefined, refusal: string): void {
    adminLog.warn({ event: 'admin.http.cross_origin_refused', method, path, origin }, refusal);
  },
  unauthorized(method: string, path: string, address: string | undefined): void {
    adminLog.warn(
      { event: 'admin.http.unauthorized', method, path, address },
      'admin HTTP request without valid credentials',
    );
  },
  forbidden(method: string, path: string, actor: string, why = 'read-only user attempted an action'): void {
    adminLog.warn({ event: 'admin.http.forbidden', method, path, actor }, why);
  },
  loginRateLimited(method: string, path: string, address: string): void {
    adminLog.warn(
      { event: 'admin.http.login_rate_limited', method, path, address },
      'too many failed admin logins from this address',
    );
  },
  action(fields: {
    actor: string;
    action: string;
    target: string;
    studyUid: string | undefined;
    result: string;
    detail: string | undefined;
  }): void {
    adminLog.info({ event: 'admin.action', ...fields }, `admin action ${fields.action}`);
  },
  notReady(failing: string[]): void {
    adminLog.debug({ event: 'admin.readyz.not_ready', failing }, 'not ready');
  },
  /** Jobs wait for a model that no live worker taking jobs has loaded (logged when it starts). */
  noWorkerForModel(model: string, pending: number, problem: string): void {
    adminLog.warn({ event: 'admin.models.no_worker', model, pending }, problem);
  },
  /** A model whose jobs waited without a worker has one again, or its jobs are gone. */
  modelWorkerBack(model: string, workers: number): void {
    adminLog.info({ event: 'admin.models.worker_back', model, workers }, `model ${model} has a worker again`);
  },
};
