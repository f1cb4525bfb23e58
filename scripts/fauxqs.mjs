// Starts fauxqs (an SQS emulator from npm) on 127.0.0.1 only: its own CLI listens on 0.0.0.0.
// Usage: node fauxqs.mjs FAUXQS_PACKAGE_DIR PORT   (stack.sh passes the pinned install's folder)
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [dir, portArg] = process.argv.slice(2);
const load = (file) => import(pathToFileURL(join(dir, "dist", file)).href);
const { buildApp } = await load("app.js");
const { SqsStore } = await load("sqs/sqsStore.js");
const port = Number.parseInt(portArg, 10);
// Queue URLs name the host the client asked (127.0.0.1:PORT), as LocalStack's path-style URLs do,
// rather than sqs.REGION.localhost, which not every resolver knows.
const sqsStore = new SqsStore();
sqsStore.host = "";
// Request logging costs about a third of its throughput.
const app = buildApp({ logger: false, stores: { sqsStore } });
try {
  await app.listen({ port, host: "127.0.0.1" });
  console.log(`fauxqs listening on http://127.0.0.1:${port}`);
} catch (error) {
  console.error(error);
  process.exit(1);
}
