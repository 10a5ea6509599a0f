// Admin HTTP access: loopback without credentials by default; anything else requires basic users or
// bearer tokens, each with role 'read' (look) or 'admin' (look and act).
import { sameSecret } from '../util/same-secret.ts';
import { isIP } from 'node:net';
import type { NextFunction, Request, Response } from 'express';
import { ConfigError } from '../config/load.ts';
import type { GatewayConfig } from '../config/schema.ts';
import { audit } from '../pipeline/audit-trail.ts';
import { adminEvents } from './events.ts';

export type AdminRole = 'read' | 'admin';
export type AdminAuth = NonNullable<GatewayConfig['http']['auth']>;

export interface Principal {
  name: string;
  role: AdminRole;
  via: 'basic' | 'bearer' | 'loopback';
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return h.startsWith('::ffff:127.');
}

/** Refuses a non-loopback admin listener without credentials: the console can reprocess and cancel. */
export function assertAuthForBinding(http: GatewayConfig['http']): void {
  if (isLoopbackHost(http.host) || http.auth) return;
  throw new ConfigError(
    `http.host is ${http.host}, not loopback: configure http.auth (basic users or bearer tokens) ` +
      `or set GATEWAY_ADMIN_TOKEN, or bind http.host to 127.0.0.1`,
  );
}

/** Constant-time comparison of secrets of any length (hashing first equalises the lengths). */

function authenticate(auth: AdminAuth, header: string | undefined): Principal | undefined {
  if (!header) return undefined;
  const [scheme, value = ''] = header.split(/\s+/, 2);
  if (scheme?.toLowerCase() === 'bearer') {
    // Check every token, so the time taken does not tell which one nearly matched.
    let found: Principal | undefined;
    for (const t of auth.bearer)
      if (sameSecret(t.token, value)) found = { name: t.name, role: t.role, via: 'bearer' };
    return found;
  }
  if (scheme?.toLowerCase() === 'basic') {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return undefined;
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    let found: Principal | undefined;
    for (const u of auth.basic)
      if (sameSecret(u.user, user) && sameSecret(u.password, password))
        found = { name: u.user, role: u.role, via: 'basic' };
    return found;
  }
  return undefined;
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

function hostnameOf(hostHeader: string): string {
  try {
    return new URL(`http://${hostHeader}`).hostname;
  } catch {
    return '';
  }
}

/**
 * Refuses what only a hostile web page makes a browser send: without auth, a Host that is not loopback
 * (DNS rebinding onto 127.0.0.1); and an action whose Origin is another site (cross-site request
 * forgery, since browsers send basic credentials on their own). Clients like curl send no Origin.
 */
function browserAttack(req: Request, authConfigured: boolean): string | undefined {
  const host = req.headers.host ?? '';
  if (!authConfigured && !isLoopbackHost(hostnameOf(host)))
    return 'without http.auth the console answers only to loopback host names';
  const origin = req.headers.origin;
  if (!SAFE_METHODS.has(req.method) && origin !== undefined) {
    let originHost = '';
    try {
      originHost = new URL(origin).host;
    } catch {
      // 'null' or garbage: not this site
    }
    if (originHost !== host) return 'cross-origin actions are refused';
  }
  return undefined;
}

/**
 * Sets res.locals.principal, or answers 401/403. Without configured auth (only allowed on loopback) the
 * caller is a local admin. Reading needs any role; anything else (actions) needs 'admin'.
 */
export function requireAuth(auth: AdminAuth | undefined) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const refusal = browserAttack(req, auth !== undefined);
    if (refusal) {
      adminEvents.crossOriginRefused(req.method, req.path, req.headers.origin, refusal);
      res.status(403).json({ error: refusal });
      return;
    }
    const principal: Principal | undefined = auth
      ? authenticate(auth, req.headers.authorization)
      : { name: 'local', role: 'admin', via: 'loopback' };
    if (!principal) {
      adminEvents.unauthorized(req.method, req.path, req.socket.remoteAddress);
      res.setHeader('WWW-Authenticate', 'Basic realm="dicom-ai-gateway", charset="UTF-8"');
      res.status(401).json({ error: 'authentication required (basic or bearer)' });
      return;
    }
    res.locals.principal = principal;
    if (!SAFE_METHODS.has(req.method) && principal.role !== 'admin') {
      adminEvents.forbidden(req.method, req.path, principal.name);
      void audit.record({
        type: 'action',
        actor: principal.name,
        role: principal.role,
        action: `${req.method} ${req.path}`,
        target: req.originalUrl,
        result: 'refused',
        detail: 'role read',
      });
      res.status(403).json({ error: `'${principal.name}' has role read: actions need role admin` });
      return;
    }
    next();
  };
}

export function principalOf(res: Response): Principal {
  return (
    (res.locals.principal as Principal | undefined) ?? { name: 'unknown', role: 'read', via: 'loopback' }
  );
}
