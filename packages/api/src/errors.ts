// Error kinds to HTTP statuses, and the `{code, message, details}` JSON body of every error response.
import { toAnodyneError, type AnodyneError, type ErrorKind } from '@anodyne/common';

/** The one place where error kinds become HTTP statuses. */
const STATUS: Record<ErrorKind, number> = {
  invalid_input: 400,
  unauthenticated: 401,
  not_allowed: 403,
  // Like Kubernetes' ResourceQuota: a refusal, not a "retry later" (rate limits are 429, below).
  quota_exceeded: 403,
  not_found: 404,
  conflict: 409,
  cancelled: 409,
  precondition_failed: 412,
  internal: 500,
  unavailable: 503,
  timeout: 504,
};

export function statusOf(err: AnodyneError): number {
  if (err.code === 'ANODYNE_E_RATE_LIMITED') return 429;
  if (err.code === 'ANODYNE_E_BODY_TOO_LARGE') return 413;
  if (err.code === 'ANODYNE_E_METHOD_NOT_ALLOWED') return 405;
  if (err.code === 'ANODYNE_E_URI_TOO_LONG') return 414;
  if (err.code === 'ANODYNE_E_UNSUPPORTED_MEDIA_TYPE') return 415;
  return STATUS[err.kind];
}

/** The JSON body of every error: `{code, message, details}`; internal errors hide their details. */
export function errorBody(err: unknown): { status: number; body: { code: string; message: string; details: Record<string, unknown> } } {
  const e = toAnodyneError(err);
  const status = statusOf(e);
  if (status >= 500 && e.kind === 'internal')
    return { status, body: { code: e.code, message: 'internal error; see the platform log', details: {} } };
  return { status, body: { code: e.code, message: e.message, details: e.details } };
}
