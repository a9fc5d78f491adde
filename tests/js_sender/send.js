// Sends spans carrying his.milestone events with the official OTel JS exporters, as an app would
// (the exporter behind the SDK's span processor); prints each export's result.
const { TracerProvider, SimpleSpanProcessor } = require("@opentelemetry/sdk-trace");
const [, , kind, url, session, count, token] = process.argv;
const Exporter = kind === "proto"
  ? require("@opentelemetry/exporter-trace-otlp-proto").OTLPTraceExporter
  : require("@opentelemetry/exporter-trace-otlp-http").OTLPTraceExporter;
const exporter = new Exporter({ url, headers: token ? { Authorization: `Bearer ${token}` } : {} });
const results = [];
const exportOriginal = exporter.export.bind(exporter);
exporter.export = (spans, done) => exportOriginal(spans, (result) => {
  results.push({ code: result.code, error: result.error ? String(result.error) : null });
  done(result);
});
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
const tracer = provider.getTracer("his-otel-js-test");
const span = tracer.startSpan("work");
for (let i = 0; i < Number(count); i++) {
  span.addEvent("his.milestone", {
    "his.session_id": session, "his.event_id": `${session}-${String(i).padStart(4, "0")}`,
    "his.evt_type": "PROGRESS", "his.agent_id": "js",
    // Half an emoji: JSON.stringify writes a lone surrogate escape for it.
    "his.evt_message": i === 0 ? "cut \ud83d here" : `step ${i}`,
  });
}
span.end();
provider.forceFlush()
  .catch((errors) => results.push({ flushError: String(errors) }))
  .then(() => provider.shutdown())
  .then(() => console.log(JSON.stringify(results)));
