-- wrk script: POST /v1/messages drawing prompts from a fixed pool, plus a share of new ones.
--   wrk -t1 -c16 -d5s -s bench/pool_post.lua http://127.0.0.1:PORT -- <tag> <pool> <unique %> [<stream %>]
-- pool 1, unique 0: one prompt, so every request after the first is a cache hit.
-- pool 1000, unique 30, stream 10: the soak's mixed load (70% from a pool that stays
-- cached, 30% new prompts; 10% of all requests ask for a stream).
-- The tag keeps runs apart; done() prints the WRK_RESULT line bench/benchkit.py parses.

local counter = 0
local prefix = "pool"
local pool = 1
local unique_pct = 0
local stream_pct = 0
local next_thread = 0
local fixed = nil

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_number", next_thread)
end

function init(args)
  prefix = args[1] or "pool"
  pool = tonumber(args[2] or "1")
  unique_pct = tonumber(args[3] or "0")
  stream_pct = tonumber(args[4] or "0")
  math.randomseed(7 + (thread_number or 1))
  wrk.method = "POST"
  wrk.headers["content-type"] = "application/json"
  wrk.headers["x-api-key"] = "bench-key"
  wrk.headers["anthropic-version"] = "2023-06-01"
  if pool == 1 and unique_pct == 0 then
    fixed = make_request("bench " .. prefix .. " pool 1")  -- built once: the cheapest hit load
  end
end

function make_request(prompt, stream)
  local head = '{"model":"claude-sonnet-4-6","max_tokens":64,'
  if stream then
    head = head .. '"stream":true,'
  end
  local body = head .. '"messages":'
    .. '[{"role":"user","content":"' .. prompt .. '"}]}'
  return wrk.format("POST", "/v1/messages", nil, body)
end

function request()
  if fixed then
    return fixed
  end
  counter = counter + 1
  local prompt
  if unique_pct > 0 and math.random(100) <= unique_pct then
    prompt = "bench " .. prefix .. " t" .. tostring(thread_number or 1) .. " new " .. counter
  else
    prompt = "bench " .. prefix .. " pool " .. tostring(math.random(pool))
  end
  return make_request(prompt, stream_pct > 0 and math.random(100) <= stream_pct)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d p50_us=%.1f p99_us=%.1f"
      .. " connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
