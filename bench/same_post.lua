-- wrk script: POST /v1/messages with the same prompt every time (all cache hits after the first).
--   wrk -t1 -c16 -d5s -s bench/same_post.lua http://127.0.0.1:PORT
-- done() prints the WRK_RESULT line bench/benchkit.py-style parsers read (latencies in µs).

wrk.method = "POST"
wrk.path = "/v1/messages"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-api-key"] = "bench-key"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.body = '{"model":"claude-sonnet-4-6","max_tokens":64,"messages":'
  .. '[{"role":"user","content":"the telemetry bench asks the same thing every time"}]}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d p50_us=%.1f p99_us=%.1f"
      .. " connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
