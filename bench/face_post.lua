-- wrk script: the same Claude call through one face, a different prompt per request.
--   wrk -t1 -c16 -d5s -s bench/face_post.lua http://127.0.0.1:PORT -- <tag> <face> <stream>
-- face: "messages" (POST /v1/messages), "chat" (POST /v1/chat/completions) or
-- "responses" (POST /v1/responses); stream: 0|1.
-- Every face asks Claude the same thing (same model, max_tokens, prompt), so the upstream
-- answer is the same and the CPU difference is the face's translation.

local counter = 0
local prefix = "run"
local path = "/v1/messages"
local stream = "false"
local face = "messages"
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_number", next_thread)
end

function init(args)
  prefix = (args[1] or "run") .. " t" .. tostring(thread_number or 1)
  face = args[2] or "messages"
  if face == "chat" then path = "/v1/chat/completions" end
  if face == "responses" then path = "/v1/responses" end
  if args[3] == "1" then stream = "true" end
  wrk.method = "POST"
  wrk.headers["content-type"] = "application/json"
  wrk.headers["x-api-key"] = "bench-key"
end

function request()
  counter = counter + 1
  local prompt = '"bench ' .. prefix .. ' n' .. counter .. '"'
  local body
  if face == "responses" then
    body = '{"model":"claude-sonnet-4-6","max_output_tokens":64,"stream":' .. stream
      .. ',"input":' .. prompt .. '}'
  else
    body = '{"model":"claude-sonnet-4-6","max_tokens":64,"stream":' .. stream
      .. ',"messages":[{"role":"user","content":' .. prompt .. '}]}'
  end
  return wrk.format("POST", path, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d p50_us=%.1f p99_us=%.1f"
      .. " connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
