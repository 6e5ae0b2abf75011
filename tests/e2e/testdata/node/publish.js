// Publishes one pubq job with the Node.js Pub/Sub client, its OpenTelemetry tracing on, inside a span of
// this process, and exports this process's spans over OTLP/HTTP (JSON) to the test's receiver.
//
// Environment (all required but the last):
//   PUBSUB_EMULATOR_HOST         the emulator (the client uses it by itself)
//   PUBQ_PROJECT, PUBQ_TOPIC     where to publish
//   PUBQ_KIND, PUBQ_KEY          the job's kind and idempotency key (attributes pubq_kind, pubq_key)
//   OTLP_ENDPOINT                the receiver's OTLP/HTTP base URL, e.g. http://127.0.0.1:4318
//   PUBQ_PAYLOAD                 the job's JSON payload (default {})
//
// Prints one JSON line on stdout: {"trace_id", "span_id", "message_id"} of the span the publish ran in.
'use strict';

const {trace, SpanStatusCode} = require('@opentelemetry/api');
const {NodeTracerProvider} = require('@opentelemetry/sdk-trace-node');
const {SimpleSpanProcessor} = require('@opentelemetry/sdk-trace-base');
const {OTLPTraceExporter} = require('@opentelemetry/exporter-trace-otlp-http');
const {Resource} = require('@opentelemetry/resources');
const {PubSub} = require('@google-cloud/pubsub');

function need(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is required`);
  }
  return v;
}

async function main() {
  const project = need('PUBQ_PROJECT');
  const topic = need('PUBQ_TOPIC');
  const kind = need('PUBQ_KIND');
  const key = need('PUBQ_KEY');
  const endpoint = need('OTLP_ENDPOINT');
  need('PUBSUB_EMULATOR_HOST');
  const payload = process.env.PUBQ_PAYLOAD || '{}';

  const exporter = new OTLPTraceExporter({url: endpoint.replace(/\/$/, '') + '/v1/traces'});
  const provider = new NodeTracerProvider({
    resource: new Resource({'service.name': 'node-publisher'}),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  // Installs the global tracer provider, the W3C propagator and the async-hooks context manager, so the
  // client's create span becomes a child of the active span.
  provider.register();

  const pubsub = new PubSub({projectId: project, enableOpenTelemetryTracing: true});
  const tracer = trace.getTracer('pubq-e2e-node');
  const out = await tracer.startActiveSpan('node enqueue', async span => {
    try {
      const id = await pubsub.topic(topic).publishMessage({
        data: Buffer.from(payload),
        attributes: {pubq_kind: kind, pubq_key: key},
      });
      const sc = span.spanContext();
      return {trace_id: sc.traceId, span_id: sc.spanId, message_id: id};
    } catch (err) {
      span.recordException(err);
      span.setStatus({code: SpanStatusCode.ERROR, message: String(err)});
      throw err;
    } finally {
      span.end();
    }
  });
  await pubsub.close();
  await provider.forceFlush();
  await provider.shutdown();
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch(err => {
  process.stderr.write(`publish.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
