// What every route plugin shares: the TypeBox-typed Fastify instance, the documented error responses, scopes and the caller.
import type {
  FastifyBaseLogger,
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerDefault,
} from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { TSchema } from '@sinclair/typebox';
import { UnauthenticatedError } from '@anodyne/common';
import type { Principal } from '@anodyne/identity';
import { schemas as S } from '@anodyne/client';

/** A Fastify instance whose handlers get request types from the route's TypeBox schemas. */
export type Api = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

/** The route's documentation; routes that need a token say so in the OpenAPI document. */
export function doc(
  summary: string,
  tags: string[],
  needsToken: boolean,
): { summary: string; tags: string[]; security?: { bearer: never[] }[] } {
  return { summary, tags, ...(needsToken ? { security: [{ bearer: [] }] } : {}) };
}

/** Success responses plus the error body every route may answer with. */
export function ok<R extends Record<number, TSchema>>(r: R): R & { '4xx': typeof S.ErrorBody; '5xx': typeof S.ErrorBody } {
  return { ...r, '4xx': S.ErrorBody, '5xx': S.ErrorBody };
}

/** Route config: the scopes of which the caller needs one (absent: no token; []: any valid token) and the audit action. */
export function auth(scopes: string[] | undefined, audit?: string): { scopes?: string[]; audit?: string } {
  return { ...(scopes !== undefined ? { scopes } : {}), ...(audit ? { audit } : {}) };
}

/** Serialized answers by the object they were made from (see `sendOnce`). */
const serialized = new WeakMap<object, string>();

/**
 * Sends `value` with the route's serializer (its response schema), serializing each object only
 * once: a use case that hands out the same (frozen) object until its data changes, as cluster
 * listings do, is written out once per change however often it is asked for.
 */
export function sendOnce(reply: FastifyReply, value: object): FastifyReply {
  let text = serialized.get(value);
  if (text === undefined) {
    text = reply.serialize(value) as string; // the JSON serializer of the route's response schema
    if (Object.isFrozen(value)) serialized.set(value, text);
  }
  return reply.type('application/json; charset=utf-8').send(text);
}

/** The authenticated caller (the onRequest hook set it for every route with scopes). */
export function principal(req: FastifyRequest): Principal {
  if (!req.principal) throw new UnauthenticatedError('ANODYNE_E_TOKEN_MISSING', 'a bearer token is required');
  return req.principal;
}
