// A subscriber built the way the MUTR browser client builds it: @stomp/stompjs over sockjs-client
// (or over a plain WebSocket). Prints one line per step on stdout for api/tests/realtime_js.rs:
//   SUBSCRIBED            once the server acknowledged the subscription (receipt)
//   MESSAGE <json body>   for the first message on /topic/galaxy/public
//   DONE                  after DISCONNECT was acknowledged
// Usage: node client.mjs <http base URL> <websocket-raw|websocket|xhr-streaming|xhr-polling>
import { Client } from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import WebSocket from 'ws';

const [base, transport] = process.argv.slice(2);
const topic = '/topic/galaxy/public';

const fail = (why) => {
  console.error(`FAILED: ${why}`);
  process.exit(1);
};
setTimeout(() => fail('timed out'), 20000).unref();

const client = new Client({
  webSocketFactory: () =>
    transport === 'websocket-raw'
      ? new WebSocket(`${base.replace(/^http/, 'ws')}/ws-mutr/websocket`, ['v12.stomp', 'v11.stomp', 'v10.stomp'])
      : new SockJS(`${base}/ws-mutr`, null, { transports: [transport] }),
  connectHeaders: { 'X-Guest-Token': 'js-test-guest' },
  heartbeatIncoming: 1000,
  heartbeatOutgoing: 1000,
  reconnectDelay: 0,
  onStompError: (frame) => fail(`STOMP ERROR ${frame.headers.message}`),
  onWebSocketError: () => fail('transport error'),
});

client.onConnect = (frame) => {
  if (frame.headers.version !== '1.2') fail(`version ${frame.headers.version}`);
  client.watchForReceipt('subscribed', () => console.log('SUBSCRIBED'));
  client.subscribe(
    topic,
    async (message) => {
      if (message.headers.destination !== topic) fail(`destination ${message.headers.destination}`);
      console.log(`MESSAGE ${message.body}`);
      await client.deactivate();
      console.log('DONE');
      process.exit(0);
    },
    { receipt: 'subscribed' },
  );
};

client.activate();
