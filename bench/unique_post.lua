-- wrk script: POST /v1/messages with a different prompt on every request (all cache misses).
--   wrk -t1 -c16 -d5s -s bench/unique_post.lua http://127.0.0.1:PORT -- <run tag>
-- The run tag keeps prompts unique across runs; done() prints one WRK_RESULT line that
-- bench/benchkit.py parses (latencies in microseconds).

local counter = 0
local prefix = "run"
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_number", next_thread)
end

function init(args)
  prefix = (args[1] or "run") .. " t" .. tostring(thread_number or 1)
  wrk.method = "POST"
  wrk.headers["content-type"] = "application/json"
  wrk.headers["x-api-key"] = "bench-key"
  wrk.headers["anthropic-version"] = "2023-06-01"
end

function request()
  counter = counter + 1
  local body = '{"model":"claude-sonnet-4-6","max_tokens":64,"messages":'
    .. '[{"role":"user","content":"bench ' .. prefix .. ' n' .. counter .. '"}]}'
  return wrk.format("POST", "/v1/messages", nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d p50_us=%.1f p99_us=%.1f"
      .. " connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
