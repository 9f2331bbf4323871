// k6 load test of the minimart order API: checkout at a ramping arrival rate, and a sample of
// orders followed to their final state (end-to-end time as a custom Trend).
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 loadtests/checkout_test.js
//
// Parameters (all optional, -e NAME=value):
//   BASE_URL        the order API (default http://127.0.0.1:8080); the cluster ingress works too
//   HOST            the Host header of every request (default: the host of BASE_URL). Kourier
//                   routes by it, so the kind cluster needs no DNS: -e BASE_URL=http://127.0.0.1:8080
//                   -e HOST=order.minimart.localhost (docs/deploy.md)
//   DURATION        length of the steady stage (default 40s); RAMP (default 10s) before and after
//   START_RATE      orders/s at the start (default 5);  PEAK_RATE orders/s at the peak (default 25;
//                   `make loadtest` passes half the capacity it measures first: what one 2-core
//                   machine completes varies ~2x, see docs/performance.md)
//   FOLLOW_RATE     orders/s followed to their final state (default 2)
//   FINAL_TIMEOUT_S how long a followed order may take to finish (default 30)
//
// Carts: 1-4 of the stocked SKUs SKU-1001..1004 (1,000,000 each), quantities 1-3. About 10% of
// the orders fail on purpose by the seed's failure rules (minimart/seed.py):
//   4% add SKU-OUT (no stock)       -> CANCELLED, reason insufficient_stock
//   3% customer 402 (credit 0)      -> CANCELLED, payment declined
//   3% postal code 00000            -> CANCELLED, shipping failed (payment refunded)
// Every such order is still a 202 at POST: the failures happen later, in the saga.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import exec from 'k6/execution';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const HOST_HEADER = __ENV.HOST ? { Host: __ENV.HOST } : {};
const DURATION = __ENV.DURATION || '40s';
const RAMP = __ENV.RAMP || '10s';
const START_RATE = parseInt(__ENV.START_RATE || '5', 10);
const PEAK_RATE = parseInt(__ENV.PEAK_RATE || '25', 10);
const FOLLOW_RATE = parseInt(__ENV.FOLLOW_RATE || '2', 10);
const FINAL_TIMEOUT_S = parseFloat(__ENV.FINAL_TIMEOUT_S || '30');

const STOCKED = ['SKU-1001', 'SKU-1002', 'SKU-1003', 'SKU-1004'];
const FINAL = ['CONFIRMED', 'CANCELLED'];

const endToEnd = new Trend('order_end_to_end_ms', true);
const ordersFinal = new Counter('orders_final');
const ordersConfirmed = new Counter('orders_confirmed');
const ordersCancelled = new Counter('orders_cancelled');
const finalReached = new Rate('orders_final_reached');
const expectedOutcome = new Rate('orders_expected_outcome');

export const options = {
  discardResponseBodies: false,
  scenarios: {
    checkout: {
      executor: 'ramping-arrival-rate',
      exec: 'checkout',
      startRate: START_RATE,
      timeUnit: '1s',
      preAllocatedVUs: 20,
      maxVUs: 200,
      stages: [
        { target: PEAK_RATE, duration: RAMP },
        { target: PEAK_RATE, duration: DURATION },
        { target: 0, duration: RAMP },
      ],
      tags: { scenario: 'checkout' },
    },
    follow: {
      executor: 'constant-arrival-rate',
      exec: 'follow',
      rate: FOLLOW_RATE,
      timeUnit: '1s',
      duration: DURATION,
      startTime: RAMP,
      preAllocatedVUs: 10,
      maxVUs: 100,
      gracefulStop: `${Math.ceil(FINAL_TIMEOUT_S) + 5}s`,
      tags: { scenario: 'follow' },
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:POST /orders}': ['p(95)<250', 'p(99)<500'],
    'checks{check:accepted}': ['rate>0.99'],
    orders_final_reached: ['rate>0.99'],
    orders_expected_outcome: ['rate>0.99'],
    order_end_to_end_ms: ['p(95)<2000'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

// A cart and the outcome the failure rules predict for it.
export function makeOrder() {
  const count = 1 + Math.floor(Math.random() * 4);
  const skus = [...STOCKED].sort(() => Math.random() - 0.5).slice(0, count);
  const items = skus.map((sku) => ({ sku, quantity: 1 + Math.floor(Math.random() * 3) }));
  let customerId = 1 + Math.floor(Math.random() * 10000);
  if (customerId === 402) customerId = 403;
  let postalCode = '12345';
  let expect = 'CONFIRMED';
  const roll = Math.random();
  if (roll < 0.04) {
    items.push({ sku: 'SKU-OUT', quantity: 1 });
    expect = 'CANCELLED';
  } else if (roll < 0.07) {
    customerId = 402;
    expect = 'CANCELLED';
  } else if (roll < 0.1) {
    postalCode = '00000';
    expect = 'CANCELLED';
  }
  const body = {
    customerId,
    items,
    shippingAddress: { name: 'Ada', line1: '1 Loop Rd', city: 'Springfield', postalCode, country: pick(['US']) },
  };
  return { body, expect };
}

function placeOrder() {
  const { body, expect } = makeOrder();
  const key = `k6-${exec.vu.idInTest}-${exec.scenario.iterationInTest}-${Date.now()}`;
  const started = Date.now();
  const res = http.post(`${BASE_URL}/orders`, JSON.stringify(body), {
    headers: { 'Content-Type': 'application/json', 'Idempotency-Key': key, ...HOST_HEADER },
    tags: { name: 'POST /orders' },
  });
  let payload = {};
  try {
    payload = res.json();
  } catch (e) {
    payload = {};
  }
  check(res, { accepted: (r) => r.status === 202 });
  check(res, {
    'body has orderId': () => typeof payload.orderId === 'string' && payload.orderId.length === 36,
    'body status PENDING': () => payload.status === 'PENDING',
    'Location is /orders/{id}': (r) => r.headers.Location === `/orders/${payload.orderId}`,
  });
  return { res, orderId: res.status === 202 ? payload.orderId : null, expect, started };
}

export function checkout() {
  placeOrder();
}

// Place an order, then poll GET /orders/{id} until it is CONFIRMED or CANCELLED (and the
// saga's last step, notification.sent, is recorded); record the end-to-end time.
export function follow() {
  const { orderId, expect, started } = placeOrder();
  if (!orderId) return;
  const deadline = started + FINAL_TIMEOUT_S * 1000;
  while (Date.now() < deadline) {
    const res = http.get(`${BASE_URL}/orders/${orderId}`, {
      headers: HOST_HEADER,
      tags: { name: 'GET /orders/{id}' },
    });
    if (res.status === 200) {
      const order = res.json();
      const done = (order.timeline || []).some((s) => s.step === 'notification.sent');
      if (FINAL.includes(order.status) && done) {
        endToEnd.add(Date.now() - started);
        ordersFinal.add(1);
        (order.status === 'CONFIRMED' ? ordersConfirmed : ordersCancelled).add(1);
        finalReached.add(true);
        expectedOutcome.add(order.status === expect);
        check(order, { 'final state as the rules predict': (o) => o.status === expect });
        return;
      }
    }
    sleep(0.05);
  }
  finalReached.add(false);
}
