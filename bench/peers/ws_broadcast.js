// A relay on Node's `ws` 8: every message a client sends goes to every other
// open client with `client.send(data, {binary})`.
// Run: node bench/peers/ws_broadcast.js PORT   (after `npm ci` in bench/peers)
'use strict';
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2]);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    for (const client of wss.clients) {
      if (client !== ws && client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    }
  });
});
wss.on('listening', () => console.log(`ws_broadcast listening on ${port}`));
