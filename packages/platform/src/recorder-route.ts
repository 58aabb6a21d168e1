// The change records run in the leader: other replicas send it their orders (start, stop, flush) through the store's notices.
import { randomUUID } from 'node:crypto';
import type { Logger } from '@anodyne/common';
import type { RecorderOrder, RecorderRoute } from '@anodyne/clusters';
import type { Signals } from '@anodyne/store';

const ORDERS = 'anodyne_recorder';
const DONE = 'anodyne_recorder_done';

/**
 * Routes the change recorder's orders to the leader. `route` is given to the recorder: on the
 * leader it records itself; elsewhere each order is sent as a notice and waited for (`waitMs`, 10 s)
 * until the leader says it has carried it out. `serve` carries out the orders on the leader.
 * A leader that changes meanwhile starts the records it should run anyway (from each cluster's
 * newest backup), so an order lost then costs at most a repeated stretch of record.
 */
export function recorderRoute(o: { signals: Signals; leads: () => boolean; logger: Logger; waitMs?: number }): {
  route: RecorderRoute;
  serve(apply: (order: RecorderOrder) => Promise<void>): () => void;
  close(): void;
} {
  const pending = new Map<string, () => void>();
  // Listening from the start: a reply must not arrive before its listener.
  const stopDone = o.signals.subscribe(DONE, (id) => pending.get(id)?.());
  const route: RecorderRoute = {
    here: o.leads,
    async send(order) {
      const id = randomUUID();
      const done = new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), o.waitMs ?? 10_000);
        pending.set(id, () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      try {
        await o.signals.notify(ORDERS, JSON.stringify({ ...order, id }));
        if (!(await done)) o.logger.warn({ order: order.op, cluster: order.cluster }, 'the leader did not confirm a change-record order');
      } finally {
        pending.delete(id);
      }
    },
  };
  return {
    route,
    serve(apply) {
      return o.signals.subscribe(ORDERS, (payload) => {
        if (payload === '' || !o.leads()) return;
        const { id, ...order } = JSON.parse(payload) as RecorderOrder & { id: string };
        void apply(order)
          .catch((err: unknown) =>
            o.logger.warn({ order: order.op, cluster: order.cluster, err: (err as Error).message }, 'a change-record order failed'),
          )
          .finally(() => void o.signals.notify(DONE, id));
      });
    },
    close: stopDone,
  };
}
